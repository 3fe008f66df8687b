"""The depth-diff chain of one connection, checked as the replay (verify-capture) will check it.

The recorder does not rebuild a book: it only needs to know when the chain breaks (a gap: take a
new snapshot) and whether a snapshot can be bridged by the diffs it holds.
"""

from __future__ import annotations


class DiffChain:
    """Spot diffs chain by `U == previous u + 1`; futures diffs by `pu == previous u`."""

    def __init__(self, futures: bool) -> None:
        self.futures = futures
        self.first_update_id: int | None = None  # U of the first diff since the last break
        self.last_update_id: int | None = None  # u of the latest diff

    def add(self, first: int, last: int, previous: int | None) -> bool:
        """Record a diff (U, u, pu); False when it does not chain onto the one before."""
        chained = True
        if self.last_update_id is not None:
            if self.futures:
                chained = previous == self.last_update_id
            else:
                chained = first == self.last_update_id + 1
        if self.last_update_id is None or not chained:
            self.first_update_id = first
        self.last_update_id = last
        return chained

    def bridges(self, snapshot_update_id: int) -> bool:
        """Whether a snapshot is recent enough for the diffs held since the last break.

        Spot needs a diff with U <= lastUpdateId + 1, futures one with U <= lastUpdateId, so a
        snapshot older than the first held diff can never be joined: take another.
        """
        if self.first_update_id is None:
            return False
        slack = 0 if self.futures else 1
        return snapshot_update_id + slack >= self.first_update_id

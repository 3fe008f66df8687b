"""The depth-diff chain of one connection, checked by the replay's own state machine.

The recorder does not rebuild a book: it only needs to know when the chain breaks (a gap: take a
new snapshot) and whether a snapshot can be bridged by the diffs it holds. Both answers come from
`sync_kernel` (`observe_diff`, `bridges` over a `SYNC` record), the state machine verify-capture
and the pipeline's capture rebuild replay the files with, called here one message at a time.
"""

from __future__ import annotations

from market_pipeline.vendors.binance import sync_kernel as sk


class DiffChain:
    """Spot diffs chain by `U == previous u + 1`; futures diffs by `pu == previous u`."""

    def __init__(self, futures: bool) -> None:
        self.futures = futures
        self.sync = sk.new_sync()

    @property
    def first_update_id(self) -> int | None:
        """U of the first diff since the last break."""
        s = self.sync[0]
        return int(s["held_first_u"]) if s["seen_any"] else None

    @property
    def last_update_id(self) -> int | None:
        """u of the latest diff."""
        s = self.sync[0]
        return int(s["seen_u"]) if s["seen_any"] else None

    def add(self, first: int, last: int, previous: int | None) -> bool:
        """Record a diff (U, u, pu); False when it does not chain onto the one before."""
        return bool(sk.observe_diff(self.sync, self.futures, first, last, -1 if previous is None else previous))

    def bridges(self, snapshot_update_id: int) -> bool:
        """Whether a snapshot is recent enough for the diffs held since the last break.

        Spot needs a diff with U <= lastUpdateId + 1, futures one with U <= lastUpdateId, so a
        snapshot older than the first held diff can never be joined: take another.
        """
        return bool(sk.bridges(self.sync, self.futures, snapshot_update_id))

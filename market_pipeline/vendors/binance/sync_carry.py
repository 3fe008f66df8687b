"""The carry between two parts of one capture replay (the capture rebuild's UTC days).

A capture replayed in parts resumes each part exactly where the one before stopped: `carry_out`
takes the sync record and the diffs still buffered for a snapshot (`SyncCarry`), `resume` puts
those in front of the next part's diffs, so a snapshot after the cut is joined by diffs from
before it, as in a replay of the whole capture.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from market_pipeline.vendors.binance.sync_kernel import (
    FIRST,
    LIVE,
    WAITING,
    CaptureDiffs,
    LevelRows,
    Tickers,
    new_cursor,
)
from market_pipeline.vendors.binance.ticker_check import check_tickers


class SyncCarry(NamedTuple):
    """Where a replay stopped, for the next part of the same capture to resume exactly there: the
    sync record and the diffs still buffered for a snapshot (their rows are `rows`, start at 0)."""

    sync: np.ndarray  # a SYNC record
    diffs: CaptureDiffs
    rows: LevelRows


def unbuffered_carry(sync: np.ndarray) -> SyncCarry:
    """A carry with no buffered diff (a part that ended in FIRST or LIVE)."""
    none = np.empty(0, np.int64)
    return SyncCarry(sync, CaptureDiffs(*[none] * len(CaptureDiffs._fields)), LevelRows(none.astype(bool), none, none))


def carry_out(sync: np.ndarray, cursor: np.ndarray, diffs: CaptureDiffs, rows: LevelRows) -> SyncCarry:
    """The carry at the end of a part: the diffs buffered since `cursor.buffered` when WAITING
    (in FIRST and LIVE nothing is buffered). A part's diffs have contiguous rows in line order."""
    n = len(diffs.line)
    first = int(cursor[0]["buffered"]) if sync[0]["state"] == WAITING else n
    lo = int(diffs.start[first]) if first < n else 0
    hi = int(diffs.end[-1]) if first < n else 0
    kept = CaptureDiffs(*(column[first:] for column in diffs))
    kept = kept._replace(start=kept.start - lo, end=kept.end - lo)
    return SyncCarry(sync.copy(), kept, LevelRows(*(column[lo:hi] for column in rows)))


def resume(carry: SyncCarry, diffs: CaptureDiffs, rows: LevelRows) -> tuple[CaptureDiffs, LevelRows, np.ndarray]:
    """The next part's diffs with the carried ones in front, and a cursor just past those.

    `replay_capture` then visits only the part's own lines (the carried diffs are neither counted
    again nor written as rows) but replays the buffer from index 0 at the next snapshot, so a
    snapshot of this part is joined by diffs of the previous one. Use with `carry.sync`.
    """
    n_rows = len(carry.rows.tick)
    joined = CaptureDiffs(
        *(
            np.concatenate([mine, theirs + n_rows if name in ("start", "end") else theirs]).astype(np.int64, copy=False)
            for name, mine, theirs in zip(CaptureDiffs._fields, carry.diffs, diffs, strict=True)
        )
    )
    joined_rows = LevelRows(*(np.concatenate([mine, theirs]) for mine, theirs in zip(carry.rows, rows, strict=True)))
    cursor = new_cursor()
    cursor[0]["next_diff"] = len(carry.diffs.line)  # buffered stays 0: the carried diffs wait first
    return joined, joined_rows, cursor


def check_resumed_tickers(book, sync: np.ndarray, tickers: Tickers, counters: np.ndarray) -> None:
    """Resuming in sync: bookTickers of the next part for the diff the last part ended with (written
    after it) are checked against the book as it was carried."""
    if sync[0]["state"] == LIVE:
        bid, ask, st = book
        check_tickers(bid, ask, st, sync[0]["last_u"], tickers, tickers.u_sorted, counters, 0)


def first_checkable_u(carry: SyncCarry) -> int:
    """The lowest final u a diff applied after this carry can have: bookTickers below it can never
    be checked any more, the others may still meet their diff in the next part."""
    s = carry.sync[0]
    if s["state"] == LIVE:
        return int(s["last_u"]) + 1
    if s["state"] == FIRST:
        return int(s["last_u"])  # the snapshot's lastUpdateId: futures apply a diff ending there
    return int(carry.diffs.last_u[0]) if len(carry.diffs.line) else int(s["last_u"]) + 1

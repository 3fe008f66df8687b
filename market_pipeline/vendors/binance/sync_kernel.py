"""The one Binance depth-sync state machine: verify-capture, the capture rebuild and the recorder.

Rules (Binance "how to manage a local order book"):
- spot: drop u <= lastUpdateId; the first applied diff has U <= lastUpdateId + 1 <= u; then
  every diff needs U == previous u + 1;
- futures (USD-M, COIN-M): drop u < lastUpdateId; the first applied diff has
  U <= lastUpdateId <= u; then every diff needs pu == previous u.
A broken chain is a gap: the book is out of sync and diffs are buffered again until the next
snapshot (a resync).

State lives in a numpy record (`SYNC`, one-element array) read by field name; the transitions are
small jitted functions over it, called one message at a time:
- `on_snapshot` / `on_diff`: the sync states WAITING -> FIRST -> LIVE of a replay;
- `observe_diff`: the chain of diffs as they arrive on a connection (what the live recorder
  checks: a break is a gap, and `bridges` tells whether a REST snapshot can be joined by the
  diffs held since the last break).
`replay_capture` is the one batch kernel over a capture (or one day of it) in line order: it
drives the transitions, applies diffs to a `ladder.Book`, checks bookTicker messages and,
when given room, writes sampled book rows (`delta_replay.Rows`); its arguments are named groups
(`CapturePart`, `CaptureRun`, `delta_replay.Sampling`). verify-capture calls it without room for
rows, the pipeline's capture rebuild with rows; the recorder calls the transitions directly.

A capture replayed in parts (the rebuild's UTC days) resumes each part where the one before
stopped (`sync_carry`); the bookTickers are checked by `ticker_check`.
"""

from __future__ import annotations

from typing import NamedTuple

import numba as nb
import numpy as np

from market_pipeline.core.book import delta_replay as lr
from market_pipeline.core.book.ladder import (
    EMPTY,
    ST_BEST_ASK,
    ST_BEST_BID,
    Book,
    apply_rows,
    clear_book,
    resolve_cross,
    set_level,
)
from market_pipeline.core.book.replay_steps import emit_row
from market_pipeline.core.borrowed_arrays import borrowed
from market_pipeline.vendors.binance.ticker_check import check_tickers

WAITING = 0  # no valid book: buffering diffs until a snapshot
FIRST = 1  # book loaded from a snapshot: looking for the diff that brackets it
LIVE = 2  # in sync

# What `on_diff` decided for a diff.
BUFFER = 0  # WAITING: keep it for the next snapshot
DROP = 1  # older than the snapshot: not applied
APPLY = 2  # apply it to the book
GAP = 3  # the chain broke (or the snapshot is older than every diff held): back to WAITING

SYNC = np.dtype(
    [
        ("state", np.int64),  # WAITING, FIRST or LIVE
        ("lid", np.int64),  # lastUpdateId of the snapshot the book was loaded from
        ("last_u", np.int64),  # u of the last applied diff (lid right after a snapshot)
        ("seen_u", np.int64),  # u of the last diff observed on the connection
        ("held_first_u", np.int64),  # U of the first diff observed since the chain last broke
        ("ever_synced", np.bool_),
        ("seen_any", np.bool_),  # a diff was observed (seen_u, held_first_u are meaningful)
    ]
)

COUNTER_NAMES = (
    "diffs",
    "skipped_before_sync",
    "applied",
    "gaps",
    "resyncs",
    "ticker_checks",
    "ticker_mismatches",
    "dropped_after_gap",
    "unsynced_at_end",
    "crossed_events",
    "snapshots",
    "first_mismatch_ticker",  # index of the first mismatching ticker, -1 if none
    "deltas_applied",  # level updates (rows) of the applied diffs
    "crossed_levels_removed",  # levels removed resolving crossed books
)
COUNTERS = np.dtype([(name, np.int64) for name in COUNTER_NAMES])

# Position of a batch replay, carried between calls (a call returns when its rows are full);
# `ticker_hint` is where the last bookTicker lookup ended (`ticker_check.first_at_or_after`).
CURSOR = np.dtype([("next_diff", np.int64), ("next_snap", np.int64), ("buffered", np.int64), ("ticker_hint", np.int64)])


class CaptureDiffs(NamedTuple):
    """One entry per diff message, in line order; its level rows are rows[start:end]."""

    line: np.ndarray  # capture line number
    first_u: np.ndarray  # U
    last_u: np.ndarray  # u
    prev_u: np.ndarray  # pu (-1 on spot)
    start: np.ndarray
    end: np.ndarray
    recv: np.ndarray  # receive time, ns
    orig: np.ndarray  # exchange event time, ns


class DepthSnapshots(NamedTuple):
    """One entry per REST snapshot line; its levels are rows[start:end]."""

    line: np.ndarray
    lid: np.ndarray  # lastUpdateId
    start: np.ndarray
    end: np.ndarray
    recv: np.ndarray
    orig: np.ndarray


class LevelRows(NamedTuple):
    is_bid: np.ndarray  # bool
    tick: np.ndarray  # int64
    lot: np.ndarray  # int64


class Tickers(NamedTuple):
    """bookTicker messages sorted by (u, row): a part's, or a window of them (`ticker_store`)."""

    u_sorted: np.ndarray
    row: np.ndarray  # the message's index in the part's line order (`first_mismatch_ticker`)
    bid_tick: np.ndarray
    bid_lot: np.ndarray
    ask_tick: np.ndarray
    ask_lot: np.ndarray


class CapturePart(NamedTuple):
    """What the `replay_capture` runs over one capture part (a day, or a whole capture) share:
    the rules, the snapshots' level rows, the tickers, the state they carry on (`new_capture_part`)."""

    futures: bool  # USD-M / COIN-M rules (pu chains), else spot
    snap_rows: LevelRows  # of every snapshot of the part, indexed by `DepthSnapshots.start/end`
    tickers: Tickers
    book: Book
    sync: np.ndarray
    counters: np.ndarray


class CaptureRun(NamedTuple):
    """One `replay_capture` run (`BatchedReplay.runs`): a batch of diffs (those still buffered for
    a snapshot first), their rows, the snapshots before its last diff, and a `CURSOR` record."""

    diffs: CaptureDiffs
    diff_rows: LevelRows
    snaps: DepthSnapshots
    cursor: np.ndarray


def new_depth_snapshots(*columns: np.ndarray) -> DepthSnapshots:
    """The REST snapshots from their columns (`DepthSnapshots`' fields, in order), read-only
    whatever made them, so that every caller runs one specialization of `replay_capture`
    (`delta_replay.read_only`)."""
    return DepthSnapshots(*(lr.read_only(column) for column in columns))


def new_capture_part(futures: bool, snaps: LevelRows, tickers: Tickers, book: Book, sync: np.ndarray) -> CapturePart:
    """A part starting from `book` and `sync` (fresh, or carried from the part before), counters at 0."""
    return CapturePart(futures, snaps, tickers, book, sync, new_counters())


def new_sync(state: int = WAITING, last_u: int = 0) -> np.ndarray:
    """A sync record; a replay resuming from an in-sync checkpoint starts LIVE at its last u."""
    sync = np.zeros(1, SYNC)
    sync[0]["state"] = state
    sync[0]["last_u"] = last_u
    sync[0]["ever_synced"] = state == LIVE
    return sync


def new_counters() -> np.ndarray:
    counters = np.zeros(1, COUNTERS)
    counters[0]["first_mismatch_ticker"] = -1
    return counters


def new_cursor() -> np.ndarray:
    return np.zeros(1, CURSOR)


# --- the rules ------------------------------------------------------------------------------


@nb.njit(cache=True, nogil=True, inline="always")
def follows(futures, last_u, first_u, prev_u):
    """Whether a diff (U, pu) continues the chain after u = last_u."""
    return prev_u == last_u if futures else first_u == last_u + 1


@nb.njit(cache=True, nogil=True, inline="always")
def is_stale(futures, lid, u):
    """Whether a diff ending at u is already contained in the snapshot lid."""
    return u < lid if futures else u <= lid


@nb.njit(cache=True, nogil=True, inline="always")
def brackets(futures, lid, first_u, u):
    """Whether a diff (U, u) is the first one to apply on top of the snapshot lid."""
    return (first_u <= lid <= u) if futures else (first_u <= lid + 1 <= u)


# --- transitions (one message each) ---------------------------------------------------------


@nb.njit(cache=True, nogil=True)
def observe_diff(sync, futures, first_u, u, prev_u):
    """A diff as it arrives on a connection; False when it does not chain onto the one before.

    A break starts a new held run at this diff (`bridges` then needs a newer snapshot).
    """
    s = sync[0]
    chained = True
    if s.seen_any:
        chained = follows(futures, s.seen_u, first_u, prev_u)
    if not s.seen_any or not chained:
        s.held_first_u = first_u
    s.seen_u = u
    s.seen_any = True
    return chained


@nb.njit(cache=True, nogil=True)
def bridges(sync, futures, lid):
    """Whether a snapshot is recent enough for the diffs observed since the last break.

    The first applied diff needs U <= lid + 1 (spot) or U <= lid (futures), so a snapshot
    older than the first held diff can never be joined.
    """
    s = sync[0]
    if not s.seen_any:
        return False
    slack = 0 if futures else 1
    return lid + slack >= s.held_first_u


@nb.njit(cache=True, nogil=True)
def on_snapshot(sync, counters, lid):
    """A REST snapshot line; True when the book is to be (re)loaded from it (state WAITING)."""
    s = sync[0]
    counters[0].snapshots += 1
    if s.state != WAITING:
        return False
    s.state = FIRST
    s.lid = lid
    s.last_u = lid
    if s.ever_synced:
        counters[0].resyncs += 1
    return True


@nb.njit(cache=True, nogil=True, inline="always")
def on_diff(sync, counters, futures, first_u, u, prev_u):
    """What to do with a diff (BUFFER, DROP, APPLY or GAP); APPLY means the caller applies it."""
    s = sync[0]
    c = counters[0]
    if s.state == WAITING:
        return BUFFER
    if s.state == FIRST:
        if is_stale(futures, s.lid, u):
            if s.ever_synced:
                c.dropped_after_gap += 1
            else:
                c.skipped_before_sync += 1
            return DROP
        if not brackets(futures, s.lid, first_u, u):
            c.gaps += 1  # the snapshot is older than every diff we still have
            s.state = WAITING
            return GAP
    elif not follows(futures, s.last_u, first_u, prev_u):
        c.gaps += 1
        s.state = WAITING
        return GAP
    s.state = LIVE
    s.ever_synced = True
    s.last_u = u
    c.applied += 1
    return APPLY


# --- the book side --------------------------------------------------------------------------


@nb.njit(cache=True, nogil=True)
def load_snapshot(book, snap_rows, start, end):
    bid, ask, st = book
    clear_book(bid, ask, st)
    for r in range(start, end):
        set_level(bid, ask, st, snap_rows.is_bid[r], snap_rows.tick[r], snap_rows.lot[r])


@nb.njit(cache=True, nogil=True, inline="always")
def apply_diff(bid, ask, st, is_bid, tick, lot, start, end, counters):
    """Apply a diff's rows; a crossed book (impossible in sync: bad data) is counted and resolved,
    the side the diff touched last winning."""
    c = counters[0]
    _, bid_is_newer = apply_rows(bid, ask, st, is_bid, tick, lot, start, end)
    c.deltas_applied += end - start
    if st[ST_BEST_BID] != EMPTY and st[ST_BEST_ASK] != EMPTY and st[ST_BEST_BID] >= st[ST_BEST_ASK]:
        c.crossed_events += 1
        c.crossed_levels_removed += resolve_cross(bid, ask, st, bid_is_newer)


@nb.njit(cache=True, nogil=True, inline="always")
def _diff_step(
    futures,
    i,
    first_u,
    last_u,
    prev_u,
    start,
    end,
    recv,
    orig,
    is_bid,
    tick,
    lot,
    tickers,
    u_sorted,
    bid,
    ask,
    st,
    sync,
    counters,
    cursor,
    replay,
    hint,
):
    """Diff i through the state machine (after WAITING it is applied, or buffered on a gap);
    returns what `on_diff` decided and the next bookTicker lookup's hint (`check_tickers`).

    Inlined (one call site), as everything it calls. Its arrays are the caller's borrowed views
    (`borrowed_arrays`), so the references each inlined call takes and drops are null checks, not
    atomic adds: about 40 a diff, which were three quarters of the bench day's capture kernel
    (4.2 s before, 1.0 s after)."""
    u = last_u[i]
    action = on_diff(sync, counters, futures, first_u[i], u, prev_u[i])
    if action == APPLY:
        apply_diff(bid, ask, st, is_bid, tick, lot, start[i], end[i], counters)
        hint = check_tickers(bid, ask, st, u, tickers, u_sorted, counters, hint)
        r = replay[0]
        r.last_recv = recv[i]
        r.last_orig = orig[i]
    elif action == GAP:
        cursor[0].buffered = i  # the diff that broke the chain waits for the next snapshot
    r = replay[0]
    r.last_seq = sync[0].last_u
    r.synced = sync[0].state == LIVE
    return action, hint


@nb.njit(cache=True, nogil=True)
def replay_capture(part, run, sampling, rows, filled):
    """Visit the diffs and snapshots of `run` in line order from its cursor, on the state of `part`;
    returns the rows in `rows` (`delta_replay.Rows`) after it.

    `sampling.state` is a `REPLAY_STATE` record (`interval`, `next_sample` drive the samples;
    `last_seq` is the last applied u, `synced` true only when LIVE). A row is written at every
    snapshot line, every `interval` of receive time (0: after every diff line), after the `filled`
    rows already in `rows` (left by the call before: a batch cut does not cut the output batches);
    it returns when `rows` is full (call again). Without room for rows nothing is written (verify-capture)."""
    part, run, sampling, rows = borrowed(part), borrowed(run), borrowed(sampling), borrowed(rows)
    # Fields bound once: the loop reads them for every diff.
    futures, snap_rows, tickers, book = part.futures, part.snap_rows, part.tickers, part.book
    sync, counters = part.sync, part.counters
    diffs, diff_rows, snaps, cursor = run.diffs, run.diff_rows, run.snaps, run.cursor
    bid, ask, st = book
    d_line, d_first_u, d_last_u, d_prev_u, d_start, d_end, d_recv, d_orig = diffs
    is_bid, tick, lot = diff_rows
    u_sorted = tickers.u_sorted
    s_line, s_recv = snaps.line, snaps.recv
    replay, row_counters, depth = sampling.state, sampling.counters, sampling.depth
    n_d = d_line.shape[0]
    n_s = snaps.line.shape[0]
    capacity = rows.recv.shape[0]
    emit = capacity > 0
    cur = cursor[0]
    r = replay[0]
    interval = r.interval
    n_out = filled
    hint = cur.ticker_hint
    while cur.next_diff < n_d or cur.next_snap < n_s:
        i = cur.next_diff
        k = cur.next_snap
        is_snapshot = k < n_s and (i >= n_d or s_line[k] < d_line[i])
        if emit:
            t = s_recv[k] if is_snapshot else d_recv[i]
            if interval > 0:
                # Samples due before this event show the book as it was.
                while r.next_sample < t:
                    if n_out >= capacity:
                        cur.ticker_hint = hint
                        return n_out
                    emit_row(
                        book, replay, row_counters, rows, n_out, r.next_sample, r.last_orig, lr.TRIGGER_INTERVAL, depth
                    )
                    n_out += 1
                    r.next_sample += interval
            if n_out >= capacity:
                cur.ticker_hint = hint
                return n_out
        # The diffs to step through now: after a snapshot that loads the book, those buffered while
        # waiting (their lines precede it; a gap ends them), else this diff unless still waiting.
        # One call site: `_diff_step` is inlined.
        first = last = 0
        if is_snapshot:
            if on_snapshot(sync, counters, snaps.lid[k]):
                load_snapshot(book, snap_rows, snaps.start[k], snaps.end[k])
                r.last_seq = snaps.lid[k]
                first, last = cur.buffered, i
        else:
            counters[0].diffs += 1
            if sync[0].state != WAITING:
                first, last = i, i + 1
        for j in range(first, last):
            action, hint = _diff_step(
                futures,
                j,
                d_first_u,
                d_last_u,
                d_prev_u,
                d_start,
                d_end,
                d_recv,
                d_orig,
                is_bid,
                tick,
                lot,
                tickers,
                u_sorted,
                bid,
                ask,
                st,
                sync,
                counters,
                cursor,
                replay,
                hint,
            )
            if action == GAP:
                break
        if is_snapshot:
            r.synced = sync[0].state == LIVE
            if emit:
                emit_row(
                    book, replay, row_counters, rows, n_out, snaps.recv[k], snaps.orig[k], lr.TRIGGER_SNAPSHOT, depth
                )
                n_out += 1
            cur.next_snap = k + 1
        else:
            cur.next_diff = i + 1
            if emit and interval == 0:
                emit_row(book, replay, row_counters, rows, n_out, d_recv[i], d_orig[i], lr.TRIGGER_MESSAGE, depth)
                n_out += 1
    cur.ticker_hint = hint
    return n_out


def finish(sync: np.ndarray, counters: np.ndarray, cursor: np.ndarray, n_diffs: int) -> None:
    """At the end of the input: diffs still buffered (no snapshot came) are counted."""
    if sync[0]["state"] == WAITING:
        counters[0]["unsynced_at_end"] += n_diffs - cursor[0]["buffered"]


def counter_dict(counters: np.ndarray) -> dict[str, int]:
    return {name: int(counters[0][name]) for name in COUNTER_NAMES}

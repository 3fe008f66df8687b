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

A capture replayed in parts (the rebuild's UTC days) resumes each part exactly where the one
before stopped: `carry_out` takes the sync record and the diffs still buffered for a snapshot
(`SyncCarry`), `resume` puts those in front of the next part's diffs, so a snapshot after the cut
is joined by diffs from before it, as in a replay of the whole capture.

bookTicker oracle: a ticker whose u equals the final u of an applied diff must equal the best bid
and ask (price and size) right after that diff, whichever line came first (mostly the ticker).
"""

from __future__ import annotations

from typing import NamedTuple

import numba as nb
import numpy as np

from market_pipeline.core.book import delta_replay as lr
from market_pipeline.core.book.ladder import (
    EMPTY,
    ST_BASE,
    ST_BEST_ASK,
    ST_BEST_BID,
    Book,
    clear_book,
    resolve_cross,
    set_level,
)
from market_pipeline.core.book.replay_steps import emit_row

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
# `ticker_hint` is where the last bookTicker lookup ended (`first_at_or_after`).
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
    """bookTicker messages sorted by u (`order` maps back to the message index)."""

    u_sorted: np.ndarray
    order: np.ndarray
    bid_tick: np.ndarray  # by message index
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


@nb.njit(cache=True, nogil=True, inline="always")
def first_at_or_after(sorted_values, value, hint):
    """`np.searchsorted(sorted_values, value)`, galloping forward from `hint` when the answer is
    not before it (else a binary search below it). The replay looks up rising u, so the answer is
    mostly at the hint: with a binary search over the day's bookTickers for every diff, the
    bench day's capture kernel took 0.3-0.5 s longer (of about 3.3 s)."""
    n = sorted_values.shape[0]
    lo = min(hint, n)
    hi = n
    if lo > 0 and sorted_values[lo - 1] >= value:
        hi = lo
        lo = 0
    else:
        # Every value before lo is below `value`: find a bound past the answer in doubling steps.
        step = 1
        bound = lo
        while bound < n and sorted_values[bound] < value:
            lo = bound + 1
            bound += step
            step *= 2
        hi = min(bound, n)
    while lo < hi:  # the answer is in [lo, hi]
        mid = (lo + hi) >> 1
        if sorted_values[mid] < value:
            lo = mid + 1
        else:
            hi = mid
    return lo


@nb.njit(cache=True, nogil=True, inline="always")
def check_tickers(bid, ask, st, u, tickers, u_sorted, counters, hint):
    """Check every bookTicker with this u against the book's best bid and ask, looking from `hint`;
    returns the index past them in `u_sorted`, the next lookup's hint. `u_sorted` is
    `tickers.u_sorted` passed apart, bound once by the caller: it is read for every diff."""
    c = counters[0]
    lo = first_at_or_after(u_sorted, u, hint)
    hi = lo
    while hi < u_sorted.shape[0] and u_sorted[hi] == u:
        hi += 1
    for p in range(lo, hi):
        t = tickers.order[p]
        c.ticker_checks += 1
        ok = st[ST_BEST_BID] != EMPTY and st[ST_BEST_ASK] != EMPTY
        if ok:
            bb = st[ST_BASE] + st[ST_BEST_BID]
            ba = st[ST_BASE] + st[ST_BEST_ASK]
            ok = (
                bb == tickers.bid_tick[t]
                and bid[st[ST_BEST_BID]] == tickers.bid_lot[t]
                and ba == tickers.ask_tick[t]
                and ask[st[ST_BEST_ASK]] == tickers.ask_lot[t]
            )
        if not ok:
            c.ticker_mismatches += 1
            if c.first_mismatch_ticker < 0:
                c.first_mismatch_ticker = t
    return hi


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
    bid_is_newer = True
    for r in range(start, end):
        set_level(bid, ask, st, is_bid[r], tick[r], lot[r])
        if lot[r] > 0:
            bid_is_newer = is_bid[r]
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

    The diffs' columns (`CaptureDiffs`), their rows' (`LevelRows`) and the book's come apart, bound
    once by the caller: a tuple's field read in the loop takes and drops a reference (two calls,
    each an atomic add), and these are read for every diff. Inlined, as everything it calls:
    as calls, passing the tuples took and dropped a reference to every array in them (the bench
    day's capture kernel: 6.5-6.8 s before, 3.5-4.0 s after, with the bookTicker hint)."""
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
    # Fields bound once: read through the tuples in the loop, each access is refcounted (`_diff_step`).
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


# --- the carry between two parts of one capture (the capture rebuild's days) -----------------


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


def counter_dict(counters: np.ndarray) -> dict[str, int]:
    return {name: int(counters[0][name]) for name in COUNTER_NAMES}

"""Replay Crypto Lake `book_delta_v2` messages against the vendor's `book` snapshots.

Rows sharing (received_time, sequence_number) form one exchange message and are applied
together. Snapshot k is aligned after the last delta message whose sequence_number is <= the
snapshot's sequence_number (the vendor stamps a snapshot with the last update it contains).

Gaps:
- with contiguous sequence numbers (+1 per message) a jump proves a gap; the book is marked
  out of sync at once;
- with monotonic numbers (Binance update ids) a jump proves nothing, so a gap shows up only as
  disagreement with the next vendor snapshot (a divergence);
- deltas of a capture carry the exchange's update-id chain (`Deltas.breaks_chain`, flagged by
  the reader with the raw check's rule, `core/update_chain.py`): a message that breaks it proves
  a gap whatever the numbering, and the book is marked out of sync at once.
Either way the top of the book is repaired ("filled") from the next vendor snapshot: the
levels the snapshot covers are replaced by it, deeper levels are kept, and the book is in sync
again. A message older than the last applied one is out of order: it is skipped and counted,
and the book is marked out of sync (its update may be lost) until the next snapshot; with the
chain, a message that continues it (a sequence reset: OKX's `seqId` dropping below `prevSeqId`)
or a snapshot message is in order whatever its number.

Snapshot messages (an optional per-row `is_snapshot` column, Tardis.dev semantics): a message
flagged as a snapshot that follows one that was not (or comes first) clears the whole book
before its rows are applied; consecutive snapshot messages build one snapshot. The book is
then in sync, and an open gap counts as filled. Without the column no message is a snapshot.

Crossed or locked books after a message are resolved by `ladder.resolve_cross` (the side the
message touched last wins) and counted.

Inputs, outputs and scratch space are named tuples of arrays (`Deltas`, `Snapshots`, `Rows`,
`Agreement`, `Levels`, `ladder.Book`, and `Sampling` for a kernel that is handed how to sample);
scalar state and counters are numpy records (`REPLAY_STATE`, `COUNTERS`, `HOURLY`) read and
written by field name. The steps other replays share (a sample row, the check against a vendor
snapshot and its repair) are in `replay_steps.py`.
"""

from __future__ import annotations

from typing import NamedTuple

import numba as nb
import numpy as np

from market_pipeline.core.book.ladder import (
    EMPTY,
    ST_BEST_ASK,
    ST_BEST_BID,
    Book,
    apply_rows,
    clear_book,
    resolve_cross,
)
from market_pipeline.core.book.replay_steps import check_and_fill, emit_levels_row, emit_row, hour_of_day
from market_pipeline.core.borrowed_arrays import borrowed

# --- inputs and outputs: named tuples of arrays ---------------------------------------------

# `Deltas.breaks_chain` of deltas that carry no update-id chain (every source but the captures).
NO_CHAIN = np.zeros(0, np.bool_)


class Deltas(NamedTuple):
    """Level updates, one row each; rows sharing (recv, seq) are one exchange message."""

    recv: np.ndarray  # int64 received_time, ns
    orig: np.ndarray  # int64 origin_time, ns
    seq: np.ndarray  # int64 sequence_number
    is_bid: np.ndarray  # bool
    tick: np.ndarray  # int64 price in ticks
    lot: np.ndarray  # int64 absolute size in lots (0 removes the level)
    is_snapshot: np.ndarray  # bool: the row belongs to a full-book snapshot message (Tardis, captures)
    # bool: the row starts a message that breaks the exchange's update-id chain (a capture's
    # `update_chain.message_breaks`); empty (NO_CHAIN) when the deltas carry no chain.
    breaks_chain: np.ndarray = NO_CHAIN


class Snapshots(NamedTuple):
    """Vendor top-N snapshots; level matrices are (rows, depth), an absent level has tick -1."""

    recv: np.ndarray
    orig: np.ndarray
    seq: np.ndarray
    bt: np.ndarray  # bid ticks
    bl: np.ndarray  # bid lots
    at: np.ndarray  # ask ticks
    al: np.ndarray  # ask lots


class Levels(NamedTuple):
    """Top levels of a book, as `ladder.top_levels` writes them: 1-d (depth) for one book,
    2-d (rows, depth) for the output rows."""

    bid_ticks: np.ndarray
    bid_lots: np.ndarray
    ask_ticks: np.ndarray
    ask_lots: np.ndarray


class Rows(NamedTuple):
    """Output buffers: one sampled book per row."""

    recv: np.ndarray  # int64
    orig: np.ndarray  # int64
    seq: np.ndarray  # int64, last applied sequence number
    synced: np.ndarray  # bool
    trigger: np.ndarray  # int8, TRIGGER_*
    bid_ticks: np.ndarray  # int64 (rows, depth)
    bid_lots: np.ndarray
    ask_ticks: np.ndarray
    ask_lots: np.ndarray


class Agreement(NamedTuple):
    """Per vendor snapshot: how the rebuilt book compared with it before the repair."""

    matched: np.ndarray  # bool
    mid_deviation: np.ndarray  # int64, half ticks
    levels_mismatched: np.ndarray  # int64
    first_mismatch: np.ndarray  # int64, -1 when matched
    synced_before: np.ndarray  # bool
    level_mask: np.ndarray  # int64, bit L: level L (either side) disagreed


class LakeReplay(NamedTuple):
    """What a lake replay works on, built in one place by its caller so that no call passes these
    in another order: the book, its state records (`REPLAY_STATE`, `COUNTERS`, `HOURLY`), the
    output `Rows`, one `Agreement` entry per snapshot and scratch `Levels` of the snapshots' depth."""

    book: Book
    state: np.ndarray
    counters: np.ndarray
    hourly: np.ndarray
    rows: Rows
    agreement: Agreement
    work: Levels


def new_levels(depth: int) -> Levels:
    return Levels(*(np.empty(depth, np.int64) for _ in range(4)))


def new_rows(capacity: int, depth: int) -> Rows:
    """Output buffers, the rebuild's writer's (`book_writer`) and every other caller's: each level
    array a Fortran-order (rows, depth) view, so that every caller runs the kernels' one
    specialization (the bench's and the tests' included). numba types an array that is C- and
    F-contiguous alike as C, as one of no or one row or of one level is, and compiles each kernel
    again for it (about 10 CPU-s for the capture's): a row has room for two levels at least, as
    the writer's (the kernels write `depth` of them, their argument), and buffers of no rows come
    from `no_rows`."""
    return Rows(
        np.empty(capacity, np.int64),
        np.empty(capacity, np.int64),
        np.empty(capacity, np.int64),
        np.empty(capacity, np.bool_),
        np.empty(capacity, np.int8),
        *(np.empty((max(depth, 2), capacity), np.int64).T for _ in range(4)),
    )


def no_rows() -> Rows:
    """Buffers with no room for a row (a capacity of 0, the length of `recv`, tells the kernels to
    write none: verify-capture), typed as `new_rows`' are: their level arrays, never written, are
    2 x 2 Fortran-order views rather than empty ones (which numba types as C)."""
    room = new_rows(2, 2)
    return Rows(*(column[:0] for column in room[:5]), *room[5:])


def new_agreement(n: int) -> Agreement:
    return Agreement(*(np.empty(n, kind) for kind in (np.bool_, np.int64, np.int64, np.int64, np.bool_, np.int64)))


def read_only(column: np.ndarray) -> np.ndarray:
    """`column` as a read-only view. numba compiles a kernel once per combination of its arrays'
    flags, and an input column arrives read-only when Arrow lent it (zero-copy) and writable when
    numpy computed it (a concatenation, another vendor's conversion): the kernels' callers pass the
    columns that come either way read-only, so that one machine code serves every source and batch
    (replay_lake_batch takes about 20 s of one core to compile, replay_capture about 35 s)."""
    view = column.view()
    view.flags.writeable = False
    return view


def no_snapshot_flags(n: int) -> np.ndarray:
    """`Deltas.is_snapshot` of a source without snapshot messages (Crypto Lake)."""
    return np.zeros(n, np.bool_)


# --- state: numpy records with named fields (one-element arrays, `x[0].field` in kernels) ----

COUNTER_NAMES = (
    "messages",
    "deltas_applied",
    "out_of_order_messages",
    "sequence_gaps",
    "vendor_snapshots",
    "vendor_snapshots_matched",
    "divergences",
    "fills",
    "crossed_events",
    "crossed_levels_removed",
    "updates_outside_window",
    "rows_written",
    "rows_written_unsynced",
    "missing_sequence_numbers",
)
COUNTERS = np.dtype([(name, np.int64) for name in COUNTER_NAMES])

# Hourly counters: hourly[hour].name, 24 records.
HOURLY_NAMES = ("sequence_gaps", "divergences", "fills", "crossed_events", "messages")
HOURLY = np.dtype([(name, np.int64) for name in HOURLY_NAMES])

# Replay state carried across batches.
REPLAY_STATE = np.dtype(
    [
        ("last_seq", np.int64),  # sequence number of the last applied message
        ("last_recv", np.int64),
        ("last_orig", np.int64),
        ("next_sample", np.int64),  # receive time of the next interval sample
        ("day_start", np.int64),
        ("interval", np.int64),  # sample interval in ns; 0 = a row after every message
        ("synced", np.bool_),
        ("have_last", np.bool_),  # a message was applied (last_* are meaningful)
        ("contiguous", np.bool_),  # sequence numbers go +1 per message: a jump is a gap
        ("gap_open", np.bool_),  # a gap was detected and no snapshot has repaired it yet
        ("in_snapshot", np.bool_),  # the last message was a snapshot message (Deltas.is_snapshot)
    ]
)

TRIGGER_SNAPSHOT = 0
TRIGGER_INTERVAL = 1
TRIGGER_MESSAGE = 2


class Sampling(NamedTuple):
    """How a replay samples its book into `Rows` (`emit_row`'s arguments besides the book and the
    row): the replay record (`REPLAY_STATE`: the sample interval and next sample time, the last
    applied sequence number, whether in sync), the counters the rows add to (`COUNTERS`), and the
    levels a row holds."""

    state: np.ndarray
    counters: np.ndarray
    depth: int


def new_counters() -> np.ndarray:
    return np.zeros(1, COUNTERS)


def new_hourly() -> np.ndarray:
    return np.zeros(24, HOURLY)


def record_dict(records: np.ndarray) -> dict[str, int]:
    """A one-element record array (counters, state) as {field: int}."""
    return {name: int(records[0][name]) for name in records.dtype.names}


def new_sampling(state: np.ndarray, depth: int) -> Sampling:
    """Sampling driven by the record `state` (`new_replay_state`) into rows of `depth` levels, its
    row counters at 0 (a replay whose other counters are kept apart, as the capture rebuild's)."""
    return Sampling(state, new_counters(), depth)


def new_replay_state(day_start_ns: int, contiguous: bool, interval_ns: int, synced: bool) -> np.ndarray:
    state = np.zeros(1, REPLAY_STATE)
    r = state[0]
    r["day_start"] = day_start_ns
    r["contiguous"] = contiguous
    r["interval"] = interval_ns
    r["synced"] = synced
    # The first sample is the first grid time after the day starts.
    r["next_sample"] = day_start_ns + interval_ns if interval_ns > 0 else 0
    return state


@nb.njit(cache=True, nogil=True)
def replay_lake_batch(d, snaps, replay, depth, deltas_final, snaps_final):
    """Apply complete messages and due snapshots until input or output runs out.

    `d` are `Deltas`, `snaps` `Snapshots`, `replay` the `LakeReplay` it works on.

    Returns (deltas_consumed, snapshots_consumed, rows_out). Rows of a message cut by the end
    of the batch are left unconsumed unless `deltas_final`; the caller carries them over. No
    message is applied once the snapshot batch is used up unless `snaps_final`, since the next
    snapshot may be due before it.
    """
    d, snaps, replay = borrowed(d), borrowed(snaps), borrowed(replay)
    return _replay_lake_batch(
        d.recv,
        d.orig,
        d.seq,
        d.is_bid,
        d.tick,
        d.lot,
        d.is_snapshot,
        d.breaks_chain,
        snaps,
        replay.book.bid,
        replay.book.ask,
        replay.book.st,
        replay.state,
        replay.counters,
        replay.hourly,
        replay.rows,
        replay.agreement,
        replay.work,
        depth,
        deltas_final,
        snaps_final,
    )


@nb.njit(cache=True, nogil=True)
def _replay_lake_batch(
    d_recv,
    d_orig,
    d_seq,
    d_is_bid,
    d_tick,
    d_lot,
    d_is_snapshot,
    d_breaks_chain,
    snaps,
    bid,
    ask,
    st,
    state,
    counters,
    hourly,
    rows,
    agreement,
    work,
    depth,
    deltas_final,
    snaps_final,
):
    """`replay_lake_batch` with the deltas' and the book's arrays unpacked: as separate
    arguments rather than tuple fields numba keeps them in registers through the per-row loop
    (measured on the bench day: up to twice as fast)."""
    book = Book(bid, ask, st)
    r = state[0]
    c = counters[0]
    n = d_recv.shape[0]
    n_s = snaps.recv.shape[0]
    capacity = rows.recv.shape[0]
    chained = d_breaks_chain.shape[0] > 0
    i = 0
    k = 0
    n_out = 0
    while True:
        # Snapshots due before the next message (or at the end of the stream).
        while k < n_s and ((i < n and d_seq[i] > snaps.seq[k]) or (i >= n and deltas_final)):
            if n_out >= capacity:
                return i, k, n_out
            if (
                check_and_fill(book, state, counters, hourly, snaps, k, agreement, work)
                and depth <= work.bid_ticks.shape[0]
            ):
                # Unchanged book: its top levels were just read for the comparison.
                emit_levels_row(
                    work, state, counters, rows, n_out, snaps.recv[k], snaps.orig[k], TRIGGER_SNAPSHOT, depth
                )
            else:
                emit_row(book, state, counters, rows, n_out, snaps.recv[k], snaps.orig[k], TRIGGER_SNAPSHOT, depth)
            n_out += 1
            k += 1
        if i >= n or (k >= n_s and not snaps_final):
            break
        # The message i..j-1.
        j = i + 1
        while j < n and d_seq[j] == d_seq[i] and d_recv[j] == d_recv[i]:
            j += 1
        if j == n and not deltas_final:
            break
        # Interval samples due before this message arrives show the book as it was.
        interval = r.interval
        if interval > 0:
            while r.next_sample < d_recv[i]:
                if n_out >= capacity:
                    return i, k, n_out
                emit_row(book, state, counters, rows, n_out, r.next_sample, r.last_orig, TRIGGER_INTERVAL, depth)
                n_out += 1
                r.next_sample += interval
        elif n_out >= capacity:
            return i, k, n_out
        seq = d_seq[i]
        hour = hour_of_day(r, d_recv[i])
        # Where the deltas carry the chain, it orders the messages, not their numbers: a message
        # that continues it (OKX's seqId reset in maintenance drops below prevSeqId) or a snapshot
        # that restarts it is in order whatever its number.
        ordered_by_chain = chained and (not d_breaks_chain[i] or d_is_snapshot[i])
        if r.have_last and seq < r.last_seq and not ordered_by_chain:
            c.out_of_order_messages += 1
            hourly[hour].sequence_gaps += 1
            r.synced = False
            r.gap_open = True
            i = j
            continue
        jump = r.have_last and r.contiguous and seq > r.last_seq + 1
        if jump or (chained and d_breaks_chain[i]):
            c.sequence_gaps += 1
            if jump:
                c.missing_sequence_numbers += seq - r.last_seq - 1
            hourly[hour].sequence_gaps += 1
            r.synced = False
            r.gap_open = True
        if d_is_snapshot[i]:
            if not r.in_snapshot:
                # A full snapshot starts: it replaces the whole book and repairs any gap.
                clear_book(bid, ask, st)
                if r.gap_open:
                    c.fills += 1
                    hourly[hour].fills += 1
                r.gap_open = False
                r.synced = True
            r.in_snapshot = True
        else:
            r.in_snapshot = False
        dropped, last_positive_is_bid = apply_rows(bid, ask, st, d_is_bid, d_tick, d_lot, i, j)
        c.deltas_applied += j - i - dropped
        c.updates_outside_window += dropped
        removed = 0
        best_b, best_a = st[ST_BEST_BID], st[ST_BEST_ASK]
        if best_b != EMPTY and best_a != EMPTY and best_b >= best_a:  # crossed or locked (rare): spares the call
            removed = resolve_cross(bid, ask, st, last_positive_is_bid)
        if removed > 0:
            c.crossed_events += 1
            c.crossed_levels_removed += removed
            hourly[hour].crossed_events += 1
        c.messages += 1
        hourly[hour].messages += 1
        r.last_seq = seq
        r.last_recv = d_recv[i]
        r.last_orig = d_orig[i]
        r.have_last = True
        i = j
        if interval == 0:
            emit_row(book, state, counters, rows, n_out, d_recv[i - 1], d_orig[i - 1], TRIGGER_MESSAGE, depth)
            n_out += 1
    return i, k, n_out

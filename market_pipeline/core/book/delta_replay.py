"""Replay Crypto Lake `book_delta_v2` messages against the vendor's `book` snapshots.

Rows sharing (received_time, sequence_number) form one exchange message and are applied
together. Snapshot k is aligned after the last delta message whose sequence_number is <= the
snapshot's sequence_number (the vendor stamps a snapshot with the last update it contains).

Gaps:
- with contiguous sequence numbers (+1 per message) a jump proves a gap; the book is marked
  out of sync at once;
- with monotonic numbers (Binance update ids) a jump proves nothing, so a gap shows up only as
  disagreement with the next vendor snapshot (a divergence).
Either way the top of the book is repaired ("filled") from the next vendor snapshot: the
levels the snapshot covers are replaced by it, deeper levels are kept, and the book is in sync
again. A message older than the last applied one is out of order: it is skipped and counted,
and the book is marked out of sync (its update may be lost) until the next snapshot.

Crossed or locked books after a message are resolved by `ladder.resolve_cross` (the side the
message touched last wins) and counted.
"""

from __future__ import annotations

import numba as nb
import numpy as np

from market_pipeline.core.book.ladder import (
    EMPTY,
    ST_BASE,
    ST_BEST_ASK,
    ST_BEST_BID,
    ST_N_ASK,
    ST_N_BID,
    ask_update,
    bid_update,
    clear_asks_to,
    clear_bids_from,
    clear_book,
    make_room,
    resolve_cross,
    set_level,
    top_levels,
)

# Counters (int64 vector carried across batches).
C_MESSAGES = 0
C_DELTAS_APPLIED = 1
C_OUT_OF_ORDER_MESSAGES = 2
C_SEQUENCE_GAPS = 3
C_SNAPSHOTS = 4
C_SNAPSHOTS_MATCHED = 5
C_DIVERGENCES = 6
C_FILLS = 7
C_CROSSED = 8
C_CROSSED_LEVELS_REMOVED = 9
C_DROPPED_OUTSIDE_WINDOW = 10
C_ROWS_OUT = 11
C_ROWS_OUT_UNSYNCED = 12
C_MISSING_SEQUENCE_NUMBERS = 13
N_COUNTERS = 14

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

# Hourly counters: hourly[hour, H_*].
H_SEQUENCE_GAPS = 0
H_DIVERGENCES = 1
H_FILLS = 2
H_CROSSED = 3
H_MESSAGES = 4
N_HOURLY = 5
HOURLY_NAMES = ("sequence_gaps", "divergences", "fills", "crossed_events", "messages")

# Replay state carried across batches.
R_LAST_SEQ = 0
R_LAST_RECV = 1
R_LAST_ORIG = 2
R_SYNCED = 3
R_NEXT_SAMPLE = 4
R_HAVE_LAST = 5
R_DAY_START = 6
R_CONTIGUOUS = 7
R_INTERVAL = 8  # sample interval in ns; 0 = a row after every message
R_GAP_OPEN = 9  # a gap was detected and no snapshot has repaired it yet
N_REPLAY_STATE = 10

TRIGGER_SNAPSHOT = 0
TRIGGER_INTERVAL = 1
TRIGGER_MESSAGE = 2


def new_replay_state(day_start_ns: int, contiguous: bool, interval_ns: int, synced: bool) -> np.ndarray:
    rs = np.zeros(N_REPLAY_STATE, dtype=np.int64)
    rs[R_DAY_START] = day_start_ns
    rs[R_CONTIGUOUS] = int(contiguous)
    rs[R_INTERVAL] = interval_ns
    rs[R_SYNCED] = int(synced)
    # The first sample is the first grid time after the day starts.
    rs[R_NEXT_SAMPLE] = day_start_ns + interval_ns if interval_ns > 0 else 0
    return rs


@nb.njit(cache=True, nogil=True)
def _hour(rs, t):
    h = (t - rs[R_DAY_START]) // 3_600_000_000_000
    if h < 0:
        return 0
    if h > 23:
        return 23
    return h


@nb.njit(cache=True, nogil=True, inline="always")
def _emit_header(rs, counters, out, n_out, recv, orig, trigger):
    (o_recv, o_orig, o_seq, o_synced, o_trigger) = out[:5]
    o_recv[n_out] = recv
    o_orig[n_out] = orig
    o_seq[n_out] = rs[R_LAST_SEQ]
    o_synced[n_out] = rs[R_SYNCED] != 0
    o_trigger[n_out] = trigger
    counters[C_ROWS_OUT] += 1
    if rs[R_SYNCED] == 0:
        counters[C_ROWS_OUT_UNSYNCED] += 1


@nb.njit(cache=True, nogil=True)
def emit_row(bid, ask, st, rs, counters, out, n_out, recv, orig, trigger, depth):
    (o_bt, o_bl, o_at, o_al) = out[5:]
    _emit_header(rs, counters, out, n_out, recv, orig, trigger)
    top_levels(bid, ask, st, depth, o_bt[n_out], o_bl[n_out], o_at[n_out], o_al[n_out])


@nb.njit(cache=True, nogil=True)
def emit_levels_row(levels, rs, counters, out, n_out, recv, orig, trigger, depth):
    """`emit_row` with the book's top levels already at hand (`levels` as `top_levels` writes them)."""
    (o_bt, o_bl, o_at, o_al) = out[5:]
    (w_bt, w_bl, w_at, w_al) = levels
    _emit_header(rs, counters, out, n_out, recv, orig, trigger)
    for lvl in range(depth):
        o_bt[n_out, lvl] = w_bt[lvl]
        o_bl[n_out, lvl] = w_bl[lvl]
        o_at[n_out, lvl] = w_at[lvl]
        o_al[n_out, lvl] = w_al[lvl]


@nb.njit(cache=True, nogil=True)
def check_and_fill(bid, ask, st, rs, counters, hourly, k, s_recv, s_bt, s_bl, s_at, s_al, diag, work):
    """Compare the book with vendor snapshot k, then make the covered levels equal to it.

    Returns whether they matched; then `work` holds the book's top levels.
    """
    (d_match, d_mid_dev, d_mismatched_levels, d_first_mismatch, d_synced_before, d_level_mask) = diag
    (w_bt, w_bl, w_at, w_al) = work
    depth = s_bt.shape[1]
    top_levels(bid, ask, st, depth, w_bt, w_bl, w_at, w_al)
    mismatched = 0
    first = -1
    level_mask = 0  # bit L: level L (either side) disagreed
    for lvl in range(depth):
        if w_bt[lvl] != s_bt[k, lvl] or (s_bt[k, lvl] >= 0 and w_bl[lvl] != s_bl[k, lvl]):
            mismatched += 1
            level_mask |= 1 << lvl
            if first < 0:
                first = lvl
        if w_at[lvl] != s_at[k, lvl] or (s_at[k, lvl] >= 0 and w_al[lvl] != s_al[k, lvl]):
            mismatched += 1
            level_mask |= 1 << lvl
            if first < 0:
                first = lvl
    counters[C_SNAPSHOTS] += 1
    match = mismatched == 0
    d_match[k] = match
    d_mismatched_levels[k] = mismatched
    d_first_mismatch[k] = first
    d_level_mask[k] = level_mask
    d_synced_before[k] = rs[R_SYNCED] != 0
    if w_bt[0] >= 0 and w_at[0] >= 0 and s_bt[k, 0] >= 0 and s_at[k, 0] >= 0:
        d_mid_dev[k] = (w_bt[0] + w_at[0]) - (s_bt[k, 0] + s_at[k, 0])  # in half ticks
    else:
        d_mid_dev[k] = 0
    hour = _hour(rs, s_recv[k])
    gap_open = rs[R_GAP_OPEN] != 0
    if not match and rs[R_SYNCED] != 0:
        # In sync by every sequence check, yet wrong: a gap the sequence numbers cannot show.
        counters[C_DIVERGENCES] += 1
        hourly[hour, H_DIVERGENCES] += 1
        gap_open = True
    if gap_open:
        counters[C_FILLS] += 1
        hourly[hour, H_FILLS] += 1
    rs[R_GAP_OPEN] = 0
    rs[R_SYNCED] = 1
    if match:
        counters[C_SNAPSHOTS_MATCHED] += 1
        return True
    # Replace the snapshot's price range; a side listing fewer than `depth` levels is complete.
    n_sb = 0
    while n_sb < depth and s_bt[k, n_sb] >= 0:
        n_sb += 1
    n_sa = 0
    while n_sa < depth and s_at[k, n_sa] >= 0:
        n_sa += 1
    if n_sb < depth and n_sa < depth:
        clear_book(bid, ask, st)
    else:
        if n_sb < depth:
            clear_bids_from(bid, st, -(1 << 62))
        else:
            clear_bids_from(bid, st, s_bt[k, n_sb - 1])
        if n_sa < depth:
            clear_asks_to(ask, st, 1 << 62)
        else:
            clear_asks_to(ask, st, s_at[k, n_sa - 1])
    for lvl in range(n_sb):
        ok = set_level(bid, ask, st, True, s_bt[k, lvl], s_bl[k, lvl])
    for lvl in range(n_sa):
        ok = set_level(bid, ask, st, False, s_at[k, lvl], s_al[k, lvl])
    # Deeper levels we kept may now cross the snapshot's touch; the snapshot is newer.
    removed = resolve_cross(bid, ask, st, True) + resolve_cross(bid, ask, st, False)
    counters[C_CROSSED_LEVELS_REMOVED] += removed
    return False


@nb.njit(cache=True, nogil=True, inline="always")
def _make_room_from_locals(bid, ask, st, tick, best_b, best_a, n_b, n_a):
    """`make_room` for a loop that keeps the ladder's scalars in locals: store them in `st`,
    slide the window, and hand back (kept, base, best_b, best_a, n_b, n_a)."""
    st[ST_BEST_BID] = best_b
    st[ST_BEST_ASK] = best_a
    st[ST_N_BID] = n_b
    st[ST_N_ASK] = n_a
    kept = make_room(bid, ask, st, tick)
    return kept, st[ST_BASE], st[ST_BEST_BID], st[ST_BEST_ASK], st[ST_N_BID], st[ST_N_ASK]


@nb.njit(cache=True, nogil=True)
def replay_lake_batch(
    d_recv, d_orig, d_seq, d_is_bid, d_tick, d_lot,
    s_recv, s_orig, s_seq, s_bt, s_bl, s_at, s_al,
    bid, ask, st, rs, counters, hourly,
    out, diag, work, depth, deltas_final, snaps_final,
):
    """Apply complete messages and due snapshots until input or output runs out.

    Returns (deltas_consumed, snapshots_consumed, rows_out). Rows of a message cut by the end
    of the batch are left unconsumed unless `deltas_final`; the caller carries them over. No
    message is applied once the snapshot batch is used up unless `snaps_final`, since the next
    snapshot may be due before it.
    """
    n = d_recv.shape[0]
    n_s = s_recv.shape[0]
    capacity = out[0].shape[0]
    i = 0
    k = 0
    n_out = 0
    while True:
        # Snapshots due before the next message (or at the end of the stream).
        while k < n_s and ((i < n and d_seq[i] > s_seq[k]) or (i >= n and deltas_final)):
            if n_out >= capacity:
                return i, k, n_out
            if check_and_fill(bid, ask, st, rs, counters, hourly, k, s_recv, s_bt, s_bl, s_at, s_al, diag, work
                              ) and depth <= work[0].shape[0]:
                # Unchanged book: its top levels were just read for the comparison.
                emit_levels_row(work, rs, counters, out, n_out, s_recv[k], s_orig[k], TRIGGER_SNAPSHOT, depth)
            else:
                emit_row(bid, ask, st, rs, counters, out, n_out, s_recv[k], s_orig[k], TRIGGER_SNAPSHOT, depth)
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
        interval = rs[R_INTERVAL]
        if interval > 0:
            while rs[R_NEXT_SAMPLE] < d_recv[i]:
                if n_out >= capacity:
                    return i, k, n_out
                emit_row(bid, ask, st, rs, counters, out, n_out, rs[R_NEXT_SAMPLE], rs[R_LAST_ORIG], TRIGGER_INTERVAL, depth)
                n_out += 1
                rs[R_NEXT_SAMPLE] += interval
        elif n_out >= capacity:
            return i, k, n_out
        seq = d_seq[i]
        hour = _hour(rs, d_recv[i])
        if rs[R_HAVE_LAST] != 0 and seq < rs[R_LAST_SEQ]:
            counters[C_OUT_OF_ORDER_MESSAGES] += 1
            hourly[hour, H_SEQUENCE_GAPS] += 1
            rs[R_SYNCED] = 0
            rs[R_GAP_OPEN] = 1
            i = j
            continue
        if rs[R_HAVE_LAST] != 0 and rs[R_CONTIGUOUS] != 0 and seq > rs[R_LAST_SEQ] + 1:
            counters[C_SEQUENCE_GAPS] += 1
            counters[C_MISSING_SEQUENCE_NUMBERS] += seq - rs[R_LAST_SEQ] - 1
            hourly[hour, H_SEQUENCE_GAPS] += 1
            rs[R_SYNCED] = 0
            rs[R_GAP_OPEN] = 1
        last_positive_is_bid = True
        # The ladder's scalars in locals, as in `apply_deltas`.
        cap = bid.shape[0]
        base = st[ST_BASE]
        best_b = st[ST_BEST_BID]
        best_a = st[ST_BEST_ASK]
        n_b = st[ST_N_BID]
        n_a = st[ST_N_ASK]
        dropped = 0
        for r in range(i, j):
            tick = d_tick[r]
            lots = d_lot[r]
            x = tick - base
            if (x < 0 or x >= cap) and lots != 0:
                kept, base, best_b, best_a, n_b, n_a = _make_room_from_locals(bid, ask, st, tick, best_b, best_a, n_b, n_a)
                if not kept:
                    dropped += 1
                    continue
                x = tick - base
            if 0 <= x < cap:
                if d_is_bid[r]:
                    best_b, n_b = bid_update(bid, x, lots, best_b, n_b)
                else:
                    best_a, n_a = ask_update(ask, x, lots, best_a, n_a)
            if lots > 0:
                last_positive_is_bid = d_is_bid[r]
        st[ST_BEST_BID] = best_b
        st[ST_BEST_ASK] = best_a
        st[ST_N_BID] = n_b
        st[ST_N_ASK] = n_a
        counters[C_DELTAS_APPLIED] += j - i - dropped
        counters[C_DROPPED_OUTSIDE_WINDOW] += dropped
        removed = resolve_cross(bid, ask, st, last_positive_is_bid)
        if removed > 0:
            counters[C_CROSSED] += 1
            counters[C_CROSSED_LEVELS_REMOVED] += removed
            hourly[hour, H_CROSSED] += 1
        counters[C_MESSAGES] += 1
        hourly[hour, H_MESSAGES] += 1
        rs[R_LAST_SEQ] = seq
        rs[R_LAST_RECV] = d_recv[i]
        rs[R_LAST_ORIG] = d_orig[i]
        rs[R_HAVE_LAST] = 1
        i = j
        if interval == 0:
            emit_row(bid, ask, st, rs, counters, out, n_out, d_recv[i - 1], d_orig[i - 1], TRIGGER_MESSAGE, depth)
            n_out += 1
    return i, k, n_out


@nb.njit(cache=True, nogil=True)
def apply_deltas(d_recv, d_seq, d_is_bid, d_tick, d_lot, bid, ask, st, bests):
    """The bare core: apply messages and record best bid/ask ticks after each one.

    Used by the benchmark to measure the kernel without sampling or snapshots. Returns
    the number of messages. Same effect as `set_level` per row, but the ladder's scalars live
    in locals (numba cannot prove `st` does not alias `bid`/`ask`, so through `st` every level
    write would reload them) and a message's end is found while applying its rows.
    """
    n = d_recv.shape[0]
    cap = bid.shape[0]
    base = st[ST_BASE]
    best_b = st[ST_BEST_BID]
    best_a = st[ST_BEST_ASK]
    n_b = st[ST_N_BID]
    n_a = st[ST_N_ASK]
    r = 0
    m = 0
    while r < n:
        seq = d_seq[r]
        recv = d_recv[r]
        while True:
            tick = d_tick[r]
            lots = d_lot[r]
            i = tick - base
            if (i < 0 or i >= cap) and lots != 0:
                # Rare: slide the window. When that fails, `i` stays outside: not kept.
                _, base, best_b, best_a, n_b, n_a = _make_room_from_locals(bid, ask, st, tick, best_b, best_a, n_b, n_a)
                i = tick - base
            if 0 <= i < cap:
                if d_is_bid[r]:
                    best_b, n_b = bid_update(bid, i, lots, best_b, n_b)
                else:
                    best_a, n_a = ask_update(ask, i, lots, best_a, n_a)
            r += 1
            if r >= n or d_seq[r] != seq or d_recv[r] != recv:
                break
        bests[m, 0] = base + best_b if best_b != EMPTY else -1
        bests[m, 1] = base + best_a if best_a != EMPTY else -1
        m += 1
    st[ST_BEST_BID] = best_b
    st[ST_BEST_ASK] = best_a
    st[ST_N_BID] = n_b
    st[ST_N_ASK] = n_a
    return m

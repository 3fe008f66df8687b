"""The steps every book replay shares (the lake replay `delta_replay`, the rebuild's tail after the
day's last message, the Binance sync kernel): write the book as an output row, and check it
against a vendor snapshot and repair it from the snapshot.

Arguments are the replays' named tuples and records (`delta_replay.Rows`, `Snapshots`,
`Agreement`, `Levels`, `ladder.Book`; `REPLAY_STATE`, `COUNTERS`, `HOURLY` records).
"""

from __future__ import annotations

import numba as nb

from market_pipeline.core.book.ladder import (
    clear_asks_to,
    clear_bids_from,
    clear_book,
    resolve_cross,
    set_level,
    top_levels,
)


# The helpers of the per-message loop are inlined: a call between jitted functions passes every
# array with reference counting, which costs more than these small bodies.
@nb.njit(cache=True, nogil=True, inline="always")
def hour_of_day(r, t):
    """The hour (0-23) of time `t` in the day of the replay record `r`, clamped (as `day_clock.hour_of`)."""
    h = (t - r.day_start) // 3_600_000_000_000
    if h < 0:
        return 0
    if h > 23:
        return 23
    return h


@nb.njit(cache=True, nogil=True, inline="always")
def _emit_header(r, c, rows, n_out, recv, orig, trigger):
    rows.recv[n_out] = recv
    rows.orig[n_out] = orig
    rows.seq[n_out] = r.last_seq
    rows.synced[n_out] = r.synced
    rows.trigger[n_out] = trigger
    c.rows_written += 1
    if not r.synced:
        c.rows_written_unsynced += 1


@nb.njit(cache=True, nogil=True, inline="always")
def emit_row(book, state, counters, rows, n_out, recv, orig, trigger, depth):
    """Write the book's top `depth` levels as output row `n_out`."""
    _emit_header(state[0], counters[0], rows, n_out, recv, orig, trigger)
    top_levels(
        book.bid,
        book.ask,
        book.st,
        depth,
        rows.bid_ticks[n_out],
        rows.bid_lots[n_out],
        rows.ask_ticks[n_out],
        rows.ask_lots[n_out],
    )


@nb.njit(cache=True, nogil=True, inline="always")
def emit_levels_row(levels, state, counters, rows, n_out, recv, orig, trigger, depth):
    """`emit_row` with the book's top levels already at hand (`levels` as `top_levels` writes them)."""
    _emit_header(state[0], counters[0], rows, n_out, recv, orig, trigger)
    for lvl in range(depth):
        rows.bid_ticks[n_out, lvl] = levels.bid_ticks[lvl]
        rows.bid_lots[n_out, lvl] = levels.bid_lots[lvl]
        rows.ask_ticks[n_out, lvl] = levels.ask_ticks[lvl]
        rows.ask_lots[n_out, lvl] = levels.ask_lots[lvl]


@nb.njit(cache=True, nogil=True)
def check_and_fill(book, state, counters, hourly, snaps, k, agreement, work):
    """Compare the book with vendor snapshot k, then make the covered levels equal to it.

    Returns whether they matched; then `work` holds the book's top levels.
    """
    bid, ask, st = book
    r = state[0]
    c = counters[0]
    s_bt, s_bl, s_at, s_al = snaps.bt, snaps.bl, snaps.at, snaps.al
    w_bt, w_bl, w_at, w_al = work
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
    c.vendor_snapshots += 1
    match = mismatched == 0
    agreement.matched[k] = match
    agreement.levels_mismatched[k] = mismatched
    agreement.first_mismatch[k] = first
    agreement.level_mask[k] = level_mask
    agreement.synced_before[k] = r.synced
    if w_bt[0] >= 0 and w_at[0] >= 0 and s_bt[k, 0] >= 0 and s_at[k, 0] >= 0:
        agreement.mid_deviation[k] = (w_bt[0] + w_at[0]) - (s_bt[k, 0] + s_at[k, 0])  # in half ticks
    else:
        agreement.mid_deviation[k] = 0
    hour = hour_of_day(r, snaps.recv[k])
    gap_open = r.gap_open
    if not match and r.synced:
        # In sync by every sequence check, yet wrong: a gap the sequence numbers cannot show.
        c.divergences += 1
        hourly[hour].divergences += 1
        gap_open = True
    if gap_open:
        c.fills += 1
        hourly[hour].fills += 1
    r.gap_open = False
    r.synced = True
    if match:
        c.vendor_snapshots_matched += 1
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
        set_level(bid, ask, st, True, s_bt[k, lvl], s_bl[k, lvl])
    for lvl in range(n_sa):
        set_level(bid, ask, st, False, s_at[k, lvl], s_al[k, lvl])
    # Deeper levels we kept may now cross the snapshot's touch; the snapshot is newer.
    removed = resolve_cross(bid, ask, st, True) + resolve_cross(bid, ask, st, False)
    c.crossed_levels_removed += removed
    return False

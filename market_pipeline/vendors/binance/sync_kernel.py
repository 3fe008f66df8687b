"""Replay raw Binance depth diffs with the exchange's sync rules, checked against bookTicker.

Events are visited in capture line order. Diffs are buffered while the book waits for a REST
snapshot; when a snapshot line arrives the book is loaded from it and the buffered diffs are
replayed with the sync rule:
- spot: drop u <= lastUpdateId; the first applied diff has U <= lastUpdateId + 1 <= u; then
  every diff needs U == previous u + 1;
- futures (USD-M, COIN-M): drop u < lastUpdateId; the first applied diff has
  U <= lastUpdateId <= u; then every diff needs pu == previous u.
A broken chain is a gap: the book is out of sync and diffs are buffered again until the next
snapshot (a resync).

bookTicker oracle: a ticker whose u equals the final u of an applied diff must equal the best
bid and ask (price and size) right after that diff, whichever of the two lines came first
(on these captures most tickers are written before their diff).
"""

from __future__ import annotations

import numba as nb
import numpy as np

from market_pipeline.core.book.ladder import (
    ST_BASE,
    ST_BEST_ASK,
    ST_BEST_BID,
    EMPTY,
    clear_book,
    set_level,
)

# Counters.
B_DIFFS = 0
B_SKIPPED_BEFORE_SYNC = 1
B_APPLIED = 2
B_GAPS = 3
B_RESYNCS = 4
B_TICKER_CHECKS = 5
B_TICKER_MISMATCHES = 6
B_DROPPED_AFTER_GAP = 7
B_UNSYNCED_AT_END = 8
B_CROSSED = 9
B_SNAPSHOTS = 10
B_FIRST_MISMATCH_TICKER = 11  # index of the first mismatching ticker, -1 if none
N_B_COUNTERS = 12

B_COUNTER_NAMES = (
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
    "first_mismatch_ticker",
)

WAITING = 0  # no valid book: buffering diffs until a snapshot
FIRST = 1  # book loaded from a snapshot: looking for the diff that brackets it
LIVE = 2  # in sync


@nb.njit(cache=True, nogil=True)
def check_tickers(st, bid, ask, u, t_u_sorted, t_order, t_bt, t_bl, t_at, t_al, counters):
    lo = np.searchsorted(t_u_sorted, u)
    hi = lo
    while hi < t_u_sorted.shape[0] and t_u_sorted[hi] == u:
        hi += 1
    for p in range(lo, hi):
        t = t_order[p]
        counters[B_TICKER_CHECKS] += 1
        ok = st[ST_BEST_BID] != EMPTY and st[ST_BEST_ASK] != EMPTY
        if ok:
            bb = st[ST_BASE] + st[ST_BEST_BID]
            ba = st[ST_BASE] + st[ST_BEST_ASK]
            ok = (
                bb == t_bt[t] and bid[st[ST_BEST_BID]] == t_bl[t]
                and ba == t_at[t] and ask[st[ST_BEST_ASK]] == t_al[t]
            )
        if not ok:
            counters[B_TICKER_MISMATCHES] += 1
            if counters[B_FIRST_MISMATCH_TICKER] < 0:
                counters[B_FIRST_MISMATCH_TICKER] = t


@nb.njit(cache=True, nogil=True)
def replay_binance(
    futures,
    d_line, d_first, d_last, d_prev, d_start, d_end,
    r_is_bid, r_tick, r_lot,
    s_line, s_lid, s_start, s_end, sr_is_bid, sr_tick, sr_lot,
    t_u_sorted, t_order, t_bt, t_bl, t_at, t_al,
    bid, ask, st, counters,
):
    """Replay a whole capture; returns the sync state at the end (WAITING, FIRST or LIVE)."""
    n_d = d_line.shape[0]
    n_s = s_line.shape[0]
    counters[B_FIRST_MISMATCH_TICKER] = -1
    state = WAITING
    ever_synced = False
    last_u = np.int64(0)
    lid = np.int64(0)
    buffered = 0  # first diff not yet handled while waiting for a snapshot
    i = 0
    k = 0
    while i < n_d or k < n_s:
        if k < n_s and (i >= n_d or s_line[k] < d_line[i]):
            counters[B_SNAPSHOTS] += 1
            if state == WAITING:
                clear_book(bid, ask, st)
                for r in range(s_start[k], s_end[k]):
                    set_level(bid, ask, st, sr_is_bid[r], sr_tick[r], sr_lot[r])
                lid = s_lid[k]
                state = FIRST
                if ever_synced:
                    counters[B_RESYNCS] += 1
                # Replay the diffs that arrived while waiting; they precede this snapshot line.
                stop = i
                i = buffered
                while i < stop:
                    state, last_u = handle_diff(
                        futures, state, last_u, lid, ever_synced, i, d_first, d_last, d_prev,
                        d_start, d_end, r_is_bid, r_tick, r_lot, t_u_sorted, t_order,
                        t_bt, t_bl, t_at, t_al, bid, ask, st, counters,
                    )
                    if state == LIVE:
                        ever_synced = True
                    elif state == WAITING:
                        buffered = i
                        i = stop
                        break
                    i += 1
            k += 1
            continue
        counters[B_DIFFS] += 1
        if state == WAITING:
            i += 1  # buffered
            continue
        state, last_u = handle_diff(
            futures, state, last_u, lid, ever_synced, i, d_first, d_last, d_prev, d_start, d_end,
            r_is_bid, r_tick, r_lot, t_u_sorted, t_order, t_bt, t_bl, t_at, t_al,
            bid, ask, st, counters,
        )
        if state == LIVE:
            ever_synced = True
        elif state == WAITING:
            buffered = i  # this diff broke the chain; it is buffered for the next snapshot
        i += 1
    if state == WAITING:
        counters[B_UNSYNCED_AT_END] += n_d - buffered
    return state


@nb.njit(cache=True, nogil=True)
def handle_diff(
    futures, state, last_u, lid, ever_synced, i, d_first, d_last, d_prev, d_start, d_end,
    r_is_bid, r_tick, r_lot, t_u_sorted, t_order, t_bt, t_bl, t_at, t_al,
    bid, ask, st, counters,
):
    """Apply diff i if the sync rules allow it; returns the new (state, last_u)."""
    first_u = d_first[i]
    u = d_last[i]
    if state == FIRST:
        stale = u < lid if futures else u <= lid
        if stale:
            if ever_synced:
                counters[B_DROPPED_AFTER_GAP] += 1
            else:
                counters[B_SKIPPED_BEFORE_SYNC] += 1
            return state, last_u
        brackets = (first_u <= lid <= u) if futures else (first_u <= lid + 1 <= u)
        if not brackets:
            counters[B_GAPS] += 1  # the snapshot is older than every diff we still have
            return WAITING, last_u
    else:
        chained = d_prev[i] == last_u if futures else first_u == last_u + 1
        if not chained:
            counters[B_GAPS] += 1
            return WAITING, last_u
    for r in range(d_start[i], d_end[i]):
        set_level(bid, ask, st, r_is_bid[r], r_tick[r], r_lot[r])
    counters[B_APPLIED] += 1
    if st[ST_BEST_BID] != EMPTY and st[ST_BEST_ASK] != EMPTY and st[ST_BEST_BID] >= st[ST_BEST_ASK]:
        counters[B_CROSSED] += 1
    check_tickers(st, bid, ask, u, t_u_sorted, t_order, t_bt, t_bl, t_at, t_al, counters)
    return LIVE, u

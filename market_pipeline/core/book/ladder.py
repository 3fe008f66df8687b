"""A dense price ladder: the order book as two int64 arrays of lots indexed by tick - base.

State lives in plain arrays (as in hftbacktest v1) so every function here compiles to tight
loops: `bid` and `ask` hold the size in lots at each tick of the window [base, base + cap), and
`st` holds the scalars below. Best prices are tracked incrementally; removing the best level
scans towards the far side only as far as the next occupied tick.

The window has a fixed size (default 2^23 ticks: ±$41,943 around the touch on a 0.01 tick).
Its arrays come from calloc, so memory is only committed for pages the book touches. The
window is placed around the first price and, when a price arrives outside it, slides in place
to centre on the touch; levels that fall off the far side are evicted (ST_EVICTED). An update
still outside the re-centred window is further from the touch than half the window and is not
kept (ST_OUTSIDE). Both are reported with the book's other counters.
"""

from __future__ import annotations

from typing import NamedTuple

import numba as nb
import numpy as np

ST_BASE = 0  # tick of index 0
ST_BEST_BID = 1  # index of the best bid, -1 when the side is empty
ST_BEST_ASK = 2  # index of the best ask, -1 when the side is empty
ST_N_BID = 3  # occupied bid levels
ST_N_ASK = 4
ST_OUTSIDE = 5  # updates dropped because they lie beyond the window around the touch
ST_EVICTED = 6  # levels dropped when the window slid
ST_SIZE = 7

EMPTY = -1
DEFAULT_WINDOW_TICKS = 1 << 23


class Book(NamedTuple):
    """One book: the two sides of the window and its scalars (`ST_*`). Kernels take it whole."""

    bid: np.ndarray  # int64[cap], lots at tick base + i
    ask: np.ndarray  # int64[cap]
    st: np.ndarray  # int64[ST_SIZE]


def new_book(window_ticks: int = DEFAULT_WINDOW_TICKS) -> Book:
    """A fresh empty book (unpacks as bid, ask, st)."""
    bid = np.zeros(window_ticks, dtype=np.int64)
    ask = np.zeros(window_ticks, dtype=np.int64)
    st = np.zeros(ST_SIZE, dtype=np.int64)
    st[ST_BEST_BID] = EMPTY
    st[ST_BEST_ASK] = EMPTY
    return Book(bid, ask, st)  # ST_BASE is placed around the first price by make_room


@nb.njit(cache=True, nogil=True)
def _slide(side, shift):
    """Move side[i + shift] to side[i] in place; returns the occupied levels that fell off."""
    cap = side.shape[0]
    lost = 0
    if shift > 0:
        for i in range(min(shift, cap)):
            if side[i] != 0:
                lost += 1
        for i in range(cap):
            side[i] = side[i + shift] if i + shift < cap else 0
    elif shift < 0:
        for i in range(max(cap + shift, 0), cap):
            if side[i] != 0:
                lost += 1
        for i in range(cap - 1, -1, -1):
            side[i] = side[i + shift] if i + shift >= 0 else 0
    return lost


@nb.njit(cache=True, nogil=True)
def _recount(bid, ask, st):
    n_b = 0
    n_a = 0
    best_b = EMPTY
    best_a = EMPTY
    for i in range(bid.shape[0]):
        if bid[i] != 0:
            n_b += 1
            best_b = i
        if ask[i] != 0:
            n_a += 1
            if best_a == EMPTY:
                best_a = i
    st[ST_N_BID] = n_b
    st[ST_N_ASK] = n_a
    st[ST_BEST_BID] = best_b
    st[ST_BEST_ASK] = best_a


@nb.njit(cache=True, nogil=True)
def make_room(bid, ask, st, tick):
    """Make `tick` addressable by sliding the window; False when it lies too far from the touch."""
    cap = bid.shape[0]
    if st[ST_N_BID] == 0 and st[ST_N_ASK] == 0:
        st[ST_BASE] = tick - cap // 2
        return True
    if st[ST_BEST_BID] != EMPTY and st[ST_BEST_ASK] != EMPTY:
        touch = st[ST_BASE] + (st[ST_BEST_BID] + st[ST_BEST_ASK]) // 2
    elif st[ST_BEST_BID] != EMPTY:
        touch = st[ST_BASE] + st[ST_BEST_BID]
    else:
        touch = st[ST_BASE] + st[ST_BEST_ASK]
    new_base = touch - cap // 2
    if not (new_base <= tick < new_base + cap):
        st[ST_OUTSIDE] += 1
        return False
    shift = new_base - st[ST_BASE]
    st[ST_EVICTED] += _slide(bid, shift) + _slide(ask, shift)
    st[ST_BASE] = new_base
    _recount(bid, ask, st)
    return True


@nb.njit(cache=True, nogil=True, inline="always")
def bid_update(bid, i, lots, best, count):
    """Set bid[i] to `lots` given the side's best index and occupied count; returns the new pair.

    The state goes in and out as values so a hot loop can keep it in registers (`set_bid` is
    this on `st`).
    """
    old = bid[i]
    bid[i] = lots
    if lots > 0:
        if old == 0:
            count += 1
        if i > best:
            best = i
    elif old > 0:
        count -= 1
        if i == best:
            if count == 0:
                best = EMPTY
            else:
                j = i - 1
                while bid[j] == 0:
                    j -= 1
                best = j
    return best, count


@nb.njit(cache=True, nogil=True, inline="always")
def ask_update(ask, i, lots, best, count):
    """The ask side's `bid_update`: lower is better, EMPTY is -1."""
    old = ask[i]
    ask[i] = lots
    if lots > 0:
        if old == 0:
            count += 1
        if best == EMPTY or i < best:
            best = i
    elif old > 0:
        count -= 1
        if i == best:
            if count == 0:
                best = EMPTY
            else:
                j = i + 1
                while ask[j] == 0:
                    j += 1
                best = j
    return best, count


@nb.njit(cache=True, nogil=True, inline="always")
def set_bid(bid, st, i, lots):
    st[ST_BEST_BID], st[ST_N_BID] = bid_update(bid, i, lots, st[ST_BEST_BID], st[ST_N_BID])


@nb.njit(cache=True, nogil=True, inline="always")
def set_ask(ask, st, i, lots):
    st[ST_BEST_ASK], st[ST_N_ASK] = ask_update(ask, i, lots, st[ST_BEST_ASK], st[ST_N_ASK])


@nb.njit(cache=True, nogil=True, inline="always")
def set_level(bid, ask, st, is_bid, tick, lots):
    """Set the absolute size at one price; False when the price is beyond the window."""
    i = tick - st[ST_BASE]
    if i < 0 or i >= bid.shape[0]:
        if lots == 0:
            return True  # removing a level we do not hold is normal on Binance
        if not make_room(bid, ask, st, tick):
            return False
        i = tick - st[ST_BASE]
    if is_bid:
        set_bid(bid, st, i, lots)
    else:
        set_ask(ask, st, i, lots)
    return True


@nb.njit(cache=True, nogil=True, inline="always")
def apply_rows(bid, ask, st, is_bid, tick, lots, start, end):
    """`set_level` for rows start..end of (is_bid, tick, lots); returns (rows dropped beyond the
    window, whether the last row that added size was a bid: True when none did).

    The lake's and the capture's replays apply a message's rows with it. The ladder's scalars
    live in locals for the rows: numba cannot prove `st` does not alias `bid`/`ask`, so through
    `st` every level write would reload them.
    """
    cap = bid.shape[0]
    base = st[ST_BASE]
    best_b = st[ST_BEST_BID]
    best_a = st[ST_BEST_ASK]
    n_b = st[ST_N_BID]
    n_a = st[ST_N_ASK]
    dropped = 0
    last_positive_is_bid = True
    for row in range(start, end):
        t = tick[row]
        size = lots[row]
        x = t - base
        if x < 0 or x >= cap:
            if size == 0:
                continue  # removing a level we do not hold is normal on Binance
            st[ST_BEST_BID] = best_b
            st[ST_BEST_ASK] = best_a
            st[ST_N_BID] = n_b
            st[ST_N_ASK] = n_a
            if not make_room(bid, ask, st, t):
                dropped += 1
                continue
            base = st[ST_BASE]
            best_b = st[ST_BEST_BID]
            best_a = st[ST_BEST_ASK]
            n_b = st[ST_N_BID]
            n_a = st[ST_N_ASK]
            x = t - base
        if is_bid[row]:
            best_b, n_b = bid_update(bid, x, size, best_b, n_b)
        else:
            best_a, n_a = ask_update(ask, x, size, best_a, n_a)
        if size > 0:
            last_positive_is_bid = is_bid[row]
    st[ST_BEST_BID] = best_b
    st[ST_BEST_ASK] = best_a
    st[ST_N_BID] = n_b
    st[ST_N_ASK] = n_a
    return dropped, last_positive_is_bid


@nb.njit(cache=True, nogil=True)
def clear_bids_from(bid, st, tick):
    """Remove every bid at or above `tick` (the walk ends at the side's last level, not at `tick`)."""
    start = max(tick - st[ST_BASE], 0)
    i = st[ST_BEST_BID]
    while i >= start and st[ST_N_BID] > 0:
        if bid[i] != 0:
            bid[i] = 0
            st[ST_N_BID] -= 1
        i -= 1
    if st[ST_N_BID] == 0:
        st[ST_BEST_BID] = EMPTY
    elif st[ST_BEST_BID] >= start:
        j = start - 1
        while bid[j] == 0:
            j -= 1
        st[ST_BEST_BID] = j


@nb.njit(cache=True, nogil=True)
def clear_asks_to(ask, st, tick):
    """Remove every ask at or below `tick` (the walk ends at the side's last level, not at `tick`)."""
    stop = min(tick - st[ST_BASE], ask.shape[0] - 1)
    i = st[ST_BEST_ASK]
    if i == EMPTY:
        return
    while i <= stop and st[ST_N_ASK] > 0:
        if ask[i] != 0:
            ask[i] = 0
            st[ST_N_ASK] -= 1
        i += 1
    if st[ST_N_ASK] == 0:
        st[ST_BEST_ASK] = EMPTY
    elif st[ST_BEST_ASK] <= stop:
        j = stop + 1
        while ask[j] == 0:
            j += 1
        st[ST_BEST_ASK] = j


@nb.njit(cache=True, nogil=True)
def clear_book(bid, ask, st):
    # Walk from the touch outwards instead of zeroing the window, which would commit every page.
    clear_bids_from(bid, st, st[ST_BASE])
    clear_asks_to(ask, st, st[ST_BASE] + ask.shape[0])


@nb.njit(cache=True, nogil=True, inline="always")
def top_levels(bid, ask, st, depth, bid_ticks, bid_lots, ask_ticks, ask_lots):
    """Write the best `depth` levels a side (tick, lots); missing levels get tick -1.

    Returns (levels found on the bid side, on the ask side).

    Inlined into its callers: as a call it reference-counted the seven arrays it takes (four of
    them row views made for the call), which cost more than the walk when a row holds one level
    (the bench's best bid/ask after every message ran at 13 instead of 25 M deltas/s).

    The walk has no branch on whether a tick is occupied: every tick is written at the next free
    slot, which advances only past an occupied one. Around the touch roughly every other tick is
    occupied, so a branch there would be mispredicted about half the time (this walk dominated the
    kernel's time when every sampled row read 20 levels).

    A side's walk stops at its last occupied level (`ST_N_BID`/`ST_N_ASK` of them): a side with
    fewer than `depth` levels (a thin book, a feed of 10 levels, a book rebuilt from a few
    updates) would otherwise be walked to the window's edge, millions of ticks, for every row
    (4 ms a row, 6 s for a day sampled every minute).
    """
    base = st[ST_BASE]
    want_b = min(depth, st[ST_N_BID])
    n_b = 0
    i = st[ST_BEST_BID]
    if i != EMPTY:
        while n_b < want_b and i >= 0:
            lots = bid[i]
            bid_ticks[n_b] = base + i
            bid_lots[n_b] = lots
            n_b += lots != 0
            i -= 1
    for k in range(n_b, depth):
        bid_ticks[k] = -1
        bid_lots[k] = 0
    want_a = min(depth, st[ST_N_ASK])
    n_a = 0
    i = st[ST_BEST_ASK]
    if i != EMPTY:
        cap = ask.shape[0]
        while n_a < want_a and i < cap:
            lots = ask[i]
            ask_ticks[n_a] = base + i
            ask_lots[n_a] = lots
            n_a += lots != 0
            i += 1
    for k in range(n_a, depth):
        ask_ticks[k] = -1
        ask_lots[k] = 0
    return n_b, n_a


@nb.njit(cache=True, nogil=True)
def best_bid_tick(st):
    return st[ST_BASE] + st[ST_BEST_BID] if st[ST_BEST_BID] != EMPTY else -1


@nb.njit(cache=True, nogil=True)
def best_ask_tick(st):
    return st[ST_BASE] + st[ST_BEST_ASK] if st[ST_BEST_ASK] != EMPTY else -1


@nb.njit(cache=True, nogil=True)
def resolve_cross(bid, ask, st, bid_side_is_newer):
    """Uncross a crossed or locked book: the newer side wins, the other side's crossing levels go.

    Exchanges never publish a crossed book, so a cross means the older side holds stale levels
    (a missed removal). Returns the number of levels removed (0 when the book was not crossed).
    """
    if st[ST_BEST_BID] == EMPTY or st[ST_BEST_ASK] == EMPTY or st[ST_BEST_BID] < st[ST_BEST_ASK]:
        return 0
    before = st[ST_N_BID] + st[ST_N_ASK]
    if bid_side_is_newer:
        clear_asks_to(ask, st, st[ST_BASE] + st[ST_BEST_BID])
    else:
        clear_bids_from(bid, st, st[ST_BASE] + st[ST_BEST_ASK])
    return before - (st[ST_N_BID] + st[ST_N_ASK])

"""The Binance sync kernel's bookTicker lookup: it starts from where the last one ended (the replay
looks up rising u), and finds the same tickers as a binary search from any starting point."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from market_pipeline.core.book.ladder import new_book, set_level
from market_pipeline.vendors.binance import sync_kernel as br
from market_pipeline.vendors.binance import ticker_check as tc


@settings(max_examples=300, deadline=None)
@given(
    values=st.lists(st.integers(0, 40), max_size=30).map(sorted),
    value=st.integers(-2, 45),
    hint=st.integers(0, 35),
)
def test_lookup_from_any_hint_equals_a_binary_search(values, value, hint):
    sorted_values = np.array(values, np.int64)
    assert tc.first_at_or_after(sorted_values, value, hint) == np.searchsorted(sorted_values, value)


def _tickers(u: list[int], bid_tick: int, ask_tick: int) -> br.Tickers:
    u_sorted = np.array(u, np.int64)
    n = len(u)
    return br.Tickers(
        u_sorted,
        np.arange(n, dtype=np.int64),
        np.full(n, bid_tick, np.int64),
        np.full(n, 3, np.int64),
        np.full(n, ask_tick, np.int64),
        np.full(n, 4, np.int64),
    )


def test_tickers_behind_the_hint_are_still_checked():
    """A hint past the u looked up (u went back) falls back to the part before it: every ticker of
    that u is checked, and the index returned is just past them."""
    bid, ask, book_st = new_book(1 << 10)
    set_level(bid, ask, book_st, True, 100, 3)
    set_level(bid, ask, book_st, False, 101, 4)
    tickers = _tickers([5, 7, 7, 9, 11], 100, 102)  # the ask disagrees: every check is a mismatch
    counters = br.new_counters()
    past = tc.check_tickers(bid, ask, book_st, 7, tickers, tickers.u_sorted, counters, 5)
    assert past == 3
    assert counters[0]["ticker_checks"] == 2
    assert counters[0]["ticker_mismatches"] == 2
    assert counters[0]["first_mismatch_ticker"] == 1
    # Rising u from there: the next ticker is found ahead of the hint, a u without one checks nothing.
    assert tc.check_tickers(bid, ask, book_st, 8, tickers, tickers.u_sorted, counters, past) == 3
    assert tc.check_tickers(bid, ask, book_st, 11, tickers, tickers.u_sorted, counters, 3) == 5
    assert counters[0]["ticker_checks"] == 3

"""Whether an instrument-day passed the pipeline's blocking checks, as the run history says.

core reads no Dagster: the read API takes any `DayVerdicts` and asks it, per table and day, for the
reasons a day must not be returned. `market_pipeline.defs.common.day_outcomes.RunHistory` answers
from a Dagster instance (its public API only); `NoRunHistory` when there is none to ask.
"""

from __future__ import annotations

import datetime as dt
from typing import Protocol

# The assets whose blocking checks (and skips) a read of each lake table depends on.
TABLE_ASSETS: dict[str, tuple[str, ...]] = {
    "trades": ("raw_trades",),
    "book_delta_v2": ("raw_book_deltas",),
    "book": ("raw_book_snapshots",),
    "books": ("raw_book_deltas", "raw_book_snapshots", "raw_trades", "reconstructed_books"),
    "bars": ("raw_book_deltas", "raw_book_snapshots", "raw_trades", "reconstructed_books", "ohlcv_bars"),
}


class DayVerdicts(Protocol):
    def unusable(self, table: str, instrument_key: str, days: list[dt.date]) -> dict[dt.date, str]:
        """{day: why} for the days of `days` that did not pass the blocking checks of `table`'s assets
        (failed, skipped, or not recorded); days absent from the answer passed."""
        ...


class NoRunHistory:
    """No run history to ask: every day with a file is returned (the read API warns once)."""

    available = False

    def unusable(self, table: str, instrument_key: str, days: list[dt.date]) -> dict[dt.date, str]:
        return {}

"""`bybit_capture`: Bybit v5 captures under PIPELINE_CAPTURE_DIR served as lake tables, as the
primary source of an instrument or, through PIPELINE_SOURCES, as the reference of a bought Bybit day.

The files are `bybit_<category>_<symbol>_<YYYYMMDD>.gz` (`capture_format`); other exchanges'
files in the same directory are left to their sources. The cache, its manifest, the quarantine of
a bad file, the days covered and the books (core's generic delta replay: a snapshot, a `u` = 1
restart's included, clears and reloads the book; `seq`s only grow) are `ExchangeCaptureSource`'s,
with Bybit's parser (`capture_tables.py`) and the shared tables: `book_delta_v2` (by `seq`, with
snapshots flagged), `book`, `book_ticker` (`orderbook.1`), `trades` (`publicTrade`).
"""

from __future__ import annotations

from pathlib import Path

from market_pipeline.vendors.bybit.capture_tables import LAKE_EXCHANGE, BybitCaptureParser, file_category, lake_symbol
from market_pipeline.vendors.capture_source import name_parts, named_day
from market_pipeline.vendors.exchange_capture_source import ExchangeCaptureSource


def named_instrument(path: Path) -> str | None:
    """EXCHANGE:SYMBOL from a name like ``bybit_linear_btcusdt_20251124.gz``, None otherwise."""
    category, parts = file_category(path), name_parts(path)
    if category is None or len(parts) != (4 if named_day(path) else 3):
        return None
    try:
        return f"{LAKE_EXCHANGE}:{lake_symbol(category, parts[2])}"
    except ValueError:
        return None


class BybitCaptureSource(ExchangeCaptureSource):
    """VendorSource over the Bybit captures of a directory."""

    name = "bybit_capture"
    exchange = "bybit"
    exchange_label = "Bybit"
    parser = BybitCaptureParser

    def named_instrument(self, path: Path) -> str | None:
        return named_instrument(path)

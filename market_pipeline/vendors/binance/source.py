"""`PIPELINE_SOURCE=capture`: raw Binance captures under PIPELINE_CAPTURE_DIR, served as lake tables.

The cache, its manifest, the quarantine and the days covered are every capture source's
(`vendors/capture_source.py`); this is Binance's part: its files (``binance_<market>_<symbol>_
<YYYYMMDD>.gz``, ``vendors/binance/capture_format.py``), parsed chunk by chunk by
``capture_stream.py`` into the five tables below, and books rebuilt under Binance's sync rules
(``books.py``). A day covered gets a partition of every table, possibly empty (no REST snapshot
that day).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from market_pipeline.core.instruments import Instrument, SequenceSemantics
from market_pipeline.vendors.base import BookDay
from market_pipeline.vendors.binance.capture_format import MARKETS, lake_instrument
from market_pipeline.vendors.binance.capture_stream import LINE_ORDERED, TABLE_SCHEMAS, CaptureParser
from market_pipeline.vendors.capture_source import CaptureSource, ParsedFile, name_parts, named_day, parse_parts

if TYPE_CHECKING:
    from market_pipeline.vendors.binance.books import CaptureBookResult

# Tables a capture provides, as named in the lake.
CAPTURE_TABLES = ("trades", "book_delta_v2", "depth_snapshot", "book", "book_ticker")


def named_instrument(path: Path) -> str | None:
    """EXCHANGE:SYMBOL from a name like ``binance_usdm_btcusdt_20240808.gz``, None otherwise."""
    parts = name_parts(path)
    if len(parts) < 3 or parts[0] != "binance" or parts[1] not in MARKETS:
        return None
    symbol_parts = parts[2:-1] if named_day(path) is not None else parts[2:]
    try:
        exchange, symbol = lake_instrument(parts[1], "_".join(symbol_parts))
    except ValueError:
        return None
    return f"{exchange}:{symbol}"


def parse_file(path: Path, scratch: Path) -> ParsedFile:
    """Parse one Binance capture file chunk by chunk into per-table, per-day parts under `scratch`."""
    return parse_parts(CaptureParser([path]), path, scratch, LINE_ORDERED)


class BinanceCaptureSource(CaptureSource):
    """VendorSource over a directory of raw Binance captures."""

    name = "capture"
    exchange = "binance"
    exchange_label = "Binance"
    tables = frozenset(CAPTURE_TABLES)
    table_schemas = TABLE_SCHEMAS
    line_ordered = LINE_ORDERED
    book_agreement = False  # the REST snapshots are the replay's sync points, not a check of it

    def parse_file(self, path: Path, scratch: Path) -> ParsedFile:
        """One capture file parsed to scratch parts (`parse_file`)."""
        return parse_file(path, scratch)

    def named_instrument(self, path: Path) -> str | None:
        """EXCHANGE:SYMBOL from the file's name (`named_instrument`)."""
        return named_instrument(path)

    def sequence_semantics(self, instrument: Instrument) -> SequenceSemantics:
        return "monotonic"  # Binance update ids only grow; gaps are proven by the diff chain

    def rebuild_books(self, job: BookDay) -> CaptureBookResult | None:
        from market_pipeline.vendors.binance.books import rebuild_capture_books  # numba loads only here

        covered = job.day in self.available_days("book_delta_v2", job.instrument)
        files = self.files_of_day(job.instrument, job.day)
        return rebuild_capture_books(job, covered, files, self.fidelity_interval_ms)

"""`kraken_capture`: Kraken spot captures under PIPELINE_CAPTURE_DIR served as lake tables, as the
primary source of a pair or, through PIPELINE_SOURCES, as the reference of a bought Kraken day.

The files are `kraken_spot_<pair>_<YYYYMMDD>.gz` (`capture_format`); other exchanges' files in the
same directory are left to their sources. The cache, its manifest, the quarantine of a bad file
and the days covered are the Binance capture source's (`vendors/binance/source.py`), with Kraken's
parser (`capture_tables.py`) and tables: `book_delta_v2` (snapshots flagged, truncation written
out), `book`, `trades`. Books are rebuilt by core's generic delta replay
(`lake_shaped.rebuild_lake_books`): a Kraken snapshot clears and reloads the book, updates apply
level by level. Kraken numbers no message, so its sequence numbers (receive times) prove no gap
("monotonic") and `source_agreement` matches a bought day to it by exchange time.

The files are parsed in path order (the recorder's `YYYYMMDDTHH/` directories: time order), each
pair's book carried from one file to the next, so a file continuing a session is truncated from
the book its session had.
"""

from __future__ import annotations

from pathlib import Path

from market_pipeline.core.instruments import SequenceSemantics
from market_pipeline.vendors.base import BookDay
from market_pipeline.vendors.binance.source import CaptureSource, ParsedFile, name_parts, parse_parts
from market_pipeline.vendors.kraken.book import KrakenBook
from market_pipeline.vendors.kraken.capture_tables import (
    LAKE_EXCHANGE,
    LINE_ORDERED,
    TABLE_SCHEMAS,
    KrakenCaptureParser,
    file_pair,
    lake_symbol,
)
from market_pipeline.vendors.lake_shaped import LakeBookResult, rebuild_covered_books


def named_instrument(path: Path) -> str | None:
    """EXCHANGE:SYMBOL from a name like ``kraken_spot_xbtusd_20251124.gz``, None otherwise."""
    parts = name_parts(path)
    if len(parts) < 3 or parts[0] != "kraken" or parts[1] != "spot":
        return None
    pair = file_pair(parts[2])
    return None if pair is None else f"{LAKE_EXCHANGE}:{lake_symbol(pair)}"


class KrakenCaptureSource(CaptureSource):
    """VendorSource over the Kraken captures of a directory."""

    name = "kraken_capture"
    exchange = "kraken"
    exchange_label = "Kraken"
    tables = frozenset(TABLE_SCHEMAS)
    table_schemas = TABLE_SCHEMAS
    line_ordered = LINE_ORDERED
    book_agreement = False  # the snapshots load the book: its sync points, not a check of it

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._books: dict[str, KrakenBook | None] = {}  # each pair's book at the end of its last file parsed

    def _rebuild(self) -> dict:
        self._books = {}  # a rebuild parses every file again, from the first
        try:
            return super()._rebuild()
        finally:
            self._books = {}

    def parse_file(self, path: Path, scratch: Path) -> ParsedFile:
        parser = KrakenCaptureParser([path], carry=self._books.get(named_instrument(path) or ""))
        parsed = parse_parts(parser, path, scratch, LINE_ORDERED)
        self._books[parsed.key] = parser.book
        return parsed

    def named_instrument(self, path: Path) -> str | None:
        return named_instrument(path)

    def sequence_semantics(self, instrument) -> SequenceSemantics:
        return "monotonic"  # receive times: they grow, and a jump proves nothing

    def rebuild_books(self, job: BookDay) -> LakeBookResult | None:
        return rebuild_covered_books(self, job)

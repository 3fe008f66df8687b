"""`okx_capture`: OKX v5 captures under PIPELINE_CAPTURE_DIR served as lake tables, as the primary
source of an instrument or, through PIPELINE_SOURCES, as the reference of a bought OKX day.

The files are `okx_<market>_<instrument id>_<YYYYMMDD>.gz` (`capture_format`); other exchanges'
files in the same directory are left to their sources. The cache, its manifest, the quarantine of
a bad file and the days covered are the Binance capture source's (`vendors/binance/source.py`),
with OKX's parser (`capture_tables.py`) and tables: `book_delta_v2` (with snapshots flagged),
`book`, `book_ticker` (`bbo-tbt`), `trades`. Books are rebuilt by core's generic delta replay
(`lake_shaped.rebuild_lake_books`): an OKX snapshot clears and reloads the book, updates apply
level by level, `seqId`s only grow ("monotonic": OKX's ids jump, so a jump proves no gap).
"""

from __future__ import annotations

from pathlib import Path

from market_pipeline.core.instruments import SequenceSemantics
from market_pipeline.vendors.base import BookDay
from market_pipeline.vendors.binance.source import CaptureSource, ParsedFile, name_parts, parse_parts
from market_pipeline.vendors.lake_shaped import LakeBookResult, rebuild_covered_books
from market_pipeline.vendors.okx import capture_format as fmt
from market_pipeline.vendors.okx.capture_tables import (
    LAKE_EXCHANGE,
    LINE_ORDERED,
    TABLE_SCHEMAS,
    OkxCaptureParser,
    lake_symbol,
)


def named_instrument(path: Path) -> str | None:
    """EXCHANGE:SYMBOL from a name like ``okx_swap_btc-usdt-swap_20251124.gz``, None otherwise."""
    parts = name_parts(path)
    if len(parts) < 3 or parts[0] != "okx":
        return None
    inst_id = parts[2].upper()
    if fmt.market_of(inst_id) != parts[1]:
        return None
    return f"{LAKE_EXCHANGE}:{lake_symbol(inst_id)}"


class OkxCaptureSource(CaptureSource):
    """VendorSource over the OKX captures of a directory."""

    name = "okx_capture"
    exchange = "okx"
    exchange_label = "OKX"
    tables = frozenset(TABLE_SCHEMAS)
    table_schemas = TABLE_SCHEMAS
    line_ordered = LINE_ORDERED
    book_agreement = False  # the snapshots load the book: its sync points, not a check of it

    def parse_file(self, path: Path, scratch: Path) -> ParsedFile:
        return parse_parts(OkxCaptureParser([path]), path, scratch, LINE_ORDERED)

    def named_instrument(self, path: Path) -> str | None:
        return named_instrument(path)

    def sequence_semantics(self, instrument) -> SequenceSemantics:
        return "monotonic"  # seqIds grow with jumps: a jump proves no loss

    def rebuild_books(self, job: BookDay) -> LakeBookResult | None:
        return rebuild_covered_books(self, job)

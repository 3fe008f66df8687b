"""The reference source of an instrument-day (`PIPELINE_SOURCES`), imported and rebuilt in its own
area of the lake (`lake/reference/source=<name>/`), apart from the primary source's tables and books.

The reference's tables go through the raw stage's importer (schema checks, quarantine, day
statistics) and its books through its vendor's own rebuild, only with the reference area as
their lake: every primary asset, check and view keeps reading `lake/raw` and `lake/books`.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from market_pipeline.core.instruments import Instrument
from market_pipeline.defs.common.importer import import_partition
from market_pipeline.defs.common.reference_source import reference_source
from market_pipeline.defs.common.resources import PipelineSettings
from market_pipeline.vendors.base import BookDay, VendorSource

# What the comparison reads from a reference source (captures serve them all).
REFERENCE_TABLES = ("trades", "book_delta_v2", "book", "book_ticker", "depth_snapshot")


@dataclass(frozen=True)
class ReferenceDay:
    lake_dir: Path
    source: VendorSource


def import_reference_day(
    settings: PipelineSettings, name: str, instrument: Instrument, day: dt.date, run_id: str
) -> ReferenceDay:
    """Import the reference's tables of the instrument-day and rebuild its books, in its area.

    Raises the source's DayNotCovered when it has no data that day (no capture was running)."""
    view, source = reference_source(settings, name)
    for table in REFERENCE_TABLES:
        if table in source.tables:
            import_partition(source, view, table, instrument, day, run_id)  # type: ignore[arg-type]
    book = settings.book
    source.rebuild_books(
        BookDay(view.lake_dir, instrument, day, book.depth, book.sample_interval_ms, settings.data_dir / "tmp")
    )
    return ReferenceDay(view.lake_dir, source)

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
from market_pipeline.core.lake.paths import reference_lake_dir
from market_pipeline.defs.common.importer import import_partition
from market_pipeline.defs.common.resources import PipelineSettings
from market_pipeline.settings import SettingsView
from market_pipeline.vendors.base import BookDay, VendorSource
from market_pipeline.vendors.registry import get_vendor

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
    # The settings with the reference area as the lake: the importer and the vendor take `lake_dir` from it.
    view = SettingsView(settings, lake_dir=reference_lake_dir(settings.lake_dir, name))
    source = get_vendor(name).build(view)
    for table in REFERENCE_TABLES:
        if table in source.tables:
            import_partition(source, view, table, instrument, day, run_id)  # type: ignore[arg-type]
    book = settings.book
    source.rebuild_books(BookDay(view.lake_dir, instrument, day, book.depth, book.sample_interval_ms))
    return ReferenceDay(view.lake_dir, source)

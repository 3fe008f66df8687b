"""A directory laid out like the vendor lake: {table}/exchange=X/symbol=Y/dt=YYYY-MM-DD/*.parquet."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from market_pipeline.core.instruments import Instrument
from market_pipeline.core.lake.paths import partition_dir
from market_pipeline.vendors.base import LAKE_TABLES, MissingSourceData
from market_pipeline.vendors.lake_shaped import LakeShapedBooks


class LocalLakeSource(LakeShapedBooks):
    tables = LAKE_TABLES

    def __init__(self, root: Path, name: str = "local"):
        self.root = root
        self.name = name

    def fetch(self, table: str, instrument: Instrument, day: dt.date) -> list[Path]:
        where = partition_dir(self.root, table, instrument.exchange, instrument.symbol, day)
        files = sorted(p for p in where.glob("*.parquet") if not p.name.startswith("."))
        if not files:
            raise MissingSourceData(self.name, table, instrument, day, str(where))
        return files

    def origin(self, table: str, instrument: Instrument, day: dt.date, path: Path) -> str:
        return str(path)  # the vendor's own files, read where they are

    def available_days(self, table: str, instrument: Instrument) -> list[dt.date]:
        """Days present at the source, for sensors that look for new data."""
        base = self.root / table / f"exchange={instrument.exchange}" / f"symbol={instrument.symbol}"
        days = []
        for child in base.glob("dt=*"):
            try:
                days.append(dt.date.fromisoformat(child.name[3:]))
            except ValueError:
                continue
        return sorted(days)

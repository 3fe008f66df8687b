"""What the raw stage asks of a vendor source."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Protocol

from market_pipeline.settings import Instrument


class MissingSourceData(Exception):
    """The source has no files for a table, instrument and day."""

    def __init__(self, source: str, table: str, instrument: Instrument, day: dt.date, where: str):
        self.day = day
        super().__init__(
            f"{source} source has no {table} data for {instrument.key} on {day.isoformat()} ({where})"
        )


class DayNotCovered(MissingSourceData):
    """The source has nothing for this instrument-day by nature, not by fault (no capture was
    running that day): the raw stage records the instrument-day as missing instead of failing."""


class VendorSource(Protocol):
    name: str

    def fetch(self, table: str, instrument: Instrument, day: dt.date) -> list[Path]:
        """Local Parquet files holding the vendor's `table` for one instrument-day, in order.

        Raises MissingSourceData when the source has no such day.
        """
        ...

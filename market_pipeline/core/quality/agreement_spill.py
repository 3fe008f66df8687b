"""Rows of a day spilled by UTC hour to scratch Parquet parts, then read back one hour at a time.

The source agreement joins two sources' rows of the same hour (messages by update id, trades by
trade id, books at the same instant); neither source's files are in that order across the whole
day (a vendor's clock-skewed rows, a capture's receive order), so each side is read once in
batches and spilled by the hour of a time column. Memory is then one batch while spilling and
one hour of the projected columns while joining, never a day. Parts are written through
`parquet_io`, so they are encrypted when the lake is.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq

from market_pipeline.core.day_clock import hour_of
from market_pipeline.core.lake import parquet_io


class HourSpill:
    """Frames added in any order, kept by the UTC hour of `time_column` (rows before or after the
    day go to its first or last hour); `hour(h)` reads one hour back."""

    def __init__(self, scratch: Path, name: str, day: dt.date, time_column: str) -> None:
        self.directory = scratch / name
        self.directory.mkdir(parents=True, exist_ok=True)
        self.day = day
        self.time_column = time_column
        self.schema: pl.Schema | None = None
        self._writers: dict[int, pq.ParquetWriter] = {}

    def _path(self, hour: int) -> Path:
        return self.directory / f"{hour:02d}.parquet"

    def add(self, frame: pl.DataFrame) -> None:
        if frame.is_empty():
            return
        if self.schema is None:
            self.schema = frame.schema
        hour = hour_of(self.time_column, self.day).alias("_hour")
        for (h,), part in frame.with_columns(hour).partition_by("_hour", as_dict=True, include_key=False).items():
            table = part.to_arrow()
            writer = self._writers.get(int(h))
            if writer is None:
                writer = parquet_io.parquet_writer(self._path(int(h)), table.schema, compression="lz4")
                self._writers[int(h)] = writer
            writer.write_table(table)

    def close(self) -> None:
        for writer in self._writers.values():
            writer.close()
        self._writers.clear()

    def hour(self, hour: int) -> pl.DataFrame:
        """The rows of one hour (an empty frame of the added columns when there are none)."""
        path = self._path(hour)
        if path.is_file():
            return parquet_io.read_frame(path)
        return pl.DataFrame(schema=self.schema or {})

"""Book states streamed batch by batch, day after day, in the books files' replay order (the order
the rebuild emitted them; not sorted by received_time, see docs/data-formats.md): memory is one
batch of the selected columns, whatever the range."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Sequence

import polars as pl

from market_pipeline.core.lake import parquet_io
from market_pipeline.core.read.ranges import TimeRange
from market_pipeline.core.read.reader import LakeReader

REPLAY_BATCH_ROWS = 100_000


def replay(
    reader: LakeReader,
    instrument: str,
    start: dt.date | dt.datetime,
    end: dt.date | dt.datetime | None = None,
    columns: Sequence[str] | None = None,
    batch_rows: int = REPLAY_BATCH_ROWS,
    include_failed: bool = False,
) -> Iterator[pl.DataFrame]:
    """Frames of at most `batch_rows` books rows (received_time within the range when it is given as
    datetimes), each with the columns asked for (all by default)."""
    span = TimeRange.of(start, end)
    files = reader.day_files("books", instrument, span, include_failed)
    read = None if columns is None else list(dict.fromkeys([*columns, "received_time"]))
    for f in files:
        for batch in parquet_io.open_file(f.path).iter_batches(batch_size=batch_rows, columns=read):
            frame = pl.from_arrow(batch)
            assert isinstance(frame, pl.DataFrame)
            if span.start_ns is not None:
                frame = frame.filter(pl.col("received_time") >= span.start_ns)
            if span.end_ns is not None:
                frame = frame.filter(pl.col("received_time") < span.end_ns)
            if frame.height:
                yield frame if columns is None else frame.select(list(columns))

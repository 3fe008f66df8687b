"""Core's generic replay of a source's raw day, one book row per message (`interval_ms=0`): what a
capture source's tests compare with the exchange's book after every message."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import polars as pl

from market_pipeline.core.book.fixed_point import Grid
from market_pipeline.core.book.rebuild import RebuildResult, rebuild_day
from market_pipeline.core.instruments import Instrument


def message_books(
    deltas: Path, snapshots: Path, scratch: Path, instrument: Instrument, day: dt.date, depth: int
) -> tuple[pl.DataFrame, RebuildResult]:
    """(the book after every message, `depth` levels a side; the replay's result), from the day's
    `book_delta_v2` and `book` files, with no day before (`scratch` takes the output)."""
    output = scratch / "books.parquet"
    result = rebuild_day(
        deltas_path=deltas,
        book_path=snapshots,
        output_path=output,
        checkpoint_in=None,
        checkpoint_out=scratch / "checkpoint.parquet",
        grid=Grid(instrument.tick_size, instrument.lot_size),
        day=day,
        contiguous=False,
        depth=depth,
        interval_ms=0,  # one row per message
    )
    return pl.read_parquet(output).filter(pl.col("trigger") == "message"), result

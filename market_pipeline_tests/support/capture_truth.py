"""A synthetic day rendered as an exchange's capture, served by that exchange's capture source and
replayed by the book core's generic replay, next to the day's ground truth: the tests of the
synthetic capture writers (OKX, Bybit) hold the two equal at every vendor snapshot."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import polars as pl

from market_pipeline.core.book.fixed_point import Grid
from market_pipeline.core.book.rebuild import rebuild_day
from market_pipeline.core.instruments import Instrument

TOP = ["bid_0_price", "bid_0_size", "ask_0_price", "ask_0_size"]


def rebuilt_at_truth(
    source, instrument: Instrument, day: dt.date, truth_path: Path, scratch: Path
) -> tuple[bool, pl.DataFrame]:
    """(whether the rebuilt book is in sync after every message, every ground-truth row
    (`sequence_number`, TOP) joined to the book the source's raw day rebuilds after the message of
    the same sequence number (TOP with a `_rebuilt` suffix; null where no message has the number))."""
    (deltas,), (book,) = source.fetch("book_delta_v2", instrument, day), source.fetch("book", instrument, day)
    output = scratch / "books.parquet"
    rebuild_day(
        deltas_path=deltas,
        book_path=book,
        output_path=output,
        checkpoint_in=None,
        checkpoint_out=scratch / "checkpoint.parquet",
        grid=Grid(instrument.tick_size, instrument.lot_size),
        day=day,
        contiguous=False,
        depth=1,
        interval_ms=0,
    )
    books = pl.read_parquet(output).filter(pl.col("trigger") == "message")
    truth = pl.read_parquet(truth_path).select("sequence_number", *TOP)
    rebuilt = books.select("sequence_number", *(pl.col(c).cast(pl.Float64) for c in TOP))
    return bool(books["synced"].all()), truth.join(rebuilt, on="sequence_number", how="left", suffix="_rebuilt")

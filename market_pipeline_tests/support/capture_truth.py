"""An exchange's capture (OKX, Bybit, Kraken) served by its capture source and replayed by the book core's
generic replay (`rebuild_messages`); beside the raw check's chain breaks of the same day
(`replayed_with_chain_breaks`); for a synthetic day rendered as a capture, next to the day's
ground truth (`rebuilt_at_truth`): the tests hold the two equal at every vendor snapshot."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import polars as pl

from market_pipeline.core.book.fixed_point import Grid
from market_pipeline.core.book.rebuild import rebuild_day
from market_pipeline.core.instruments import Instrument
from market_pipeline.core.quality.chain import CHAIN_COLUMNS, chain_breaks

TOP = ["bid_0_price", "bid_0_size", "ask_0_price", "ask_0_size"]


def rebuild_messages(source, instrument: Instrument, day: dt.date, scratch: Path, depth: int):
    """(core's `RebuildResult`, the book after every message: the `message` rows, `depth` levels a
    side) of the source's raw day of `instrument`, by the generic replay, starting without a book."""
    (deltas,), (book,) = source.fetch("book_delta_v2", instrument, day), source.fetch("book", instrument, day)
    output = scratch / "books.parquet"
    result = rebuild_day(
        deltas_path=deltas,
        book_path=book,
        output_path=output,
        checkpoint_in=None,
        checkpoint_out=scratch / "checkpoint.parquet",
        grid=Grid(instrument.tick_size, instrument.lot_size),
        day=day,
        contiguous=False,
        depth=depth,
        interval_ms=0,  # one row per message
    )
    return result, pl.read_parquet(output).filter(pl.col("trigger") == "message")


def replayed_with_chain_breaks(source, instrument: Instrument, day: dt.date, scratch: Path):
    """(`rebuild_messages`' result and rows, the raw check's chain breaks of the same raw day with
    the hour of each, 0-23) of the source's day of `instrument`."""
    result, rows = rebuild_messages(source, instrument, day, scratch, depth=1)
    (deltas,) = source.fetch("book_delta_v2", instrument, day)
    breaks = chain_breaks([pl.read_parquet(deltas, columns=CHAIN_COLUMNS)])
    day_start = int(dt.datetime.combine(day, dt.time(), dt.UTC).timestamp()) * 1_000_000_000
    hours = ((breaks["received_time"] - day_start) // 3_600_000_000_000).to_list()
    return result, rows, breaks, hours


def restamped(lines: list[str], start_ns: int, step_ns: int) -> list[str]:
    """Capture lines (`<receive ns> <message>`) received `step_ns` apart from `start_ns`: a
    rendered capture spread over hours."""
    return [f"{start_ns + n * step_ns} {line.split(' ', 1)[1]}" for n, line in enumerate(lines)]


def level_at(row: dict, side: str, n: int) -> tuple[float, float] | tuple[None, None]:
    """(price, size) of level `n` of `side` ("bid", "ask") of a books row, (None, None) past its end."""
    price, size = row[f"{side}_{n}_price"], row[f"{side}_{n}_size"]
    return (None, None) if price is None else (float(price), float(size))


def rebuilt_at_truth(
    source, instrument: Instrument, day: dt.date, truth_path: Path, scratch: Path
) -> tuple[bool, pl.DataFrame]:
    """(whether the rebuilt book is in sync after every message, every ground-truth row
    (`sequence_number`, TOP) joined to the book the source's raw day rebuilds after the message of
    the same sequence number (TOP with a `_rebuilt` suffix; null where no message has the number))."""
    _, books = rebuild_messages(source, instrument, day, scratch, depth=1)
    truth = pl.read_parquet(truth_path).select("sequence_number", *TOP)
    rebuilt = books.select("sequence_number", *(pl.col(c).cast(pl.Float64) for c in TOP))
    return bool(books["synced"].all()), truth.join(rebuilt, on="sequence_number", how="left", suffix="_rebuilt")

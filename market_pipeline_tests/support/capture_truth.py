"""An exchange's capture (OKX, Bybit, Kraken) served by its capture source and replayed by the book core's
generic replay (`rebuild_messages`); a day whose chain breaks, replayed and held against the raw
check's chain breaks (`check_break_then_reconnect`); for a synthetic day rendered as a capture,
next to the day's ground truth (`rebuilt_at_truth`): the tests hold the two equal at every vendor
snapshot."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import polars as pl

from market_pipeline.core.book.fixed_point import Grid
from market_pipeline.core.book.rebuild import rebuild_day
from market_pipeline.core.day_clock import hour_of
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


# A day with a chain break, then a reconnect (`render(walk, **BREAK_THEN_RECONNECT)` of the OKX and
# Bybit synthetic captures): message 20 lost (21 breaks the chain), 60..62 lost at the reconnect,
# whose snapshot resyncs the book before message 63.
BREAK_THEN_RECONNECT = {"drop": 20, "reconnect_at": 60, "lost": 3}
LINES_AN_HOUR = 60  # `restamped(..., step_ns=NS_PER_HOUR // LINES_AN_HOUR)`


def check_break_then_reconnect(
    source, instrument: Instrument, day: dt.date, scratch: Path, walk, broken: int, resync: int
):
    """The generic replay of the source's `BREAK_THEN_RECONNECT` day of `walk` (rendered, its lines
    `LINES_AN_HOUR` an hour): its books unsynced exactly from message 21 to 59, its sequence gaps
    the raw check's chain breaks, hour by hour (message 21 at the 0-based line `broken`, the
    reconnect's snapshot at line `resync`)."""
    result, rows = rebuild_messages(source, instrument, day, scratch, depth=1)
    (deltas,) = source.fetch("book_delta_v2", instrument, day)
    breaks = chain_breaks([pl.read_parquet(deltas, columns=CHAIN_COLUMNS)])
    # The reconnect's snapshot shows the book after the lost messages, numbered as the last of
    # them: its id jumps, a break the snapshot itself repairs.
    assert breaks["sequence_number"].to_list() == [walk.messages[21].seq, walk.messages[62].seq]
    hours = breaks.select(hour_of("received_time", day))["received_time"].to_list()
    assert hours == [broken // LINES_AN_HOUR, resync // LINES_AN_HOUR] == [0, 1]
    assert result.hourly["sequence_gaps"] == [hours.count(h) for h in range(24)]
    assert (result.counters["sequence_gaps"], result.counters["fills"]) == (2, 1)
    unsynced = {m.seq for m in walk.messages[21:60]}
    assert rows.height == 2 + len(walk.messages) - 4 and (~rows["synced"]).sum() == len(unsynced) == 39
    assert rows["synced"].to_list() == [seq not in unsynced for seq in rows["sequence_number"]]


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

"""A day of update-rank inputs (books, deltas, trades files) for the rank pass and its stream:
snapshots every ~7 minutes with absent levels and two out of time order, deltas over the day and a
minute either side of it, some before any snapshot and some whose time goes back."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl

DAY = dt.date(2024, 3, 1)
START = int(dt.datetime(2024, 3, 1, tzinfo=dt.UTC).timestamp()) * 1_000_000_000
HOUR = 3_600 * 1_000_000_000
LEVELS = 3


def rank_day(tmp_path, delta_row_group_rows: int | None = None):
    """(books, deltas, trades) files of the day; the deltas in row groups of `delta_row_group_rows`
    (None: one), which the rank pass reads one at a time."""
    rng = np.random.default_rng(11)
    # Snapshots every ~7 minutes from 00:20, mid wandering around 1000 ticks (tick 0.01).
    snap_times = np.sort(START + 20 * 60 * 10**9 + rng.integers(0, 24 * HOUR - 21 * 60 * 10**9, 200))
    mids = 100_000 + np.cumsum(rng.integers(-3, 4, len(snap_times)))
    books: dict[str, object] = {"received_time": snap_times, "trigger": ["snapshot"] * len(snap_times)}
    for i in range(LEVELS):
        books[f"bid_{i}_price"] = (mids - 1 - i) / 100
        books[f"ask_{i}_price"] = (mids + 1 + i) / 100
        books[f"bid_{i}_size"] = np.full(len(snap_times), 1.5)
        books[f"ask_{i}_size"] = np.full(len(snap_times), 2.5)
    # The deepest bid of every 5th snapshot and ask of every 7th are absent; two snapshots swapped.
    every = pl.int_range(pl.len())
    order = np.arange(len(snap_times))
    order[[40, 41]] = order[[41, 40]]
    pl.DataFrame(books).with_columns(
        pl.when(every % 5 == 0).then(None).otherwise(pl.col(f"bid_{LEVELS - 1}_price")).name.keep(),
        pl.when(every % 7 == 0).then(None).otherwise(pl.col(f"ask_{LEVELS - 1}_price")).name.keep(),
    )[order].write_parquet(tmp_path / "books.parquet")
    # Deltas over the whole day and a minute either side of it, some before any snapshot.
    n = 20_000
    times = np.sort(START - 60 * 10**9 + rng.integers(0, 24 * HOUR + 120 * 10**9, n))
    times[:5] = START + np.arange(5)  # before the first snapshot: unranked
    times[[9_000, 9_001, 15_000, 15_500]] = times[[9_001, 9_000, 15_500, 15_000]]  # time going back
    prices = (100_000 + rng.integers(-8, 9, n)) / 100
    pl.DataFrame(
        {
            "received_time": times,
            "origin_time": times - 1_000_000,
            "sequence_number": np.arange(n) // 3,
            "side_is_bid": rng.integers(0, 2, n).astype(bool),
            "price": prices,
        }
    ).write_parquet(tmp_path / "deltas.parquet", row_group_size=delta_row_group_rows)
    pl.DataFrame({"received_time": times[::10]}).write_parquet(tmp_path / "trades.parquet")
    return tmp_path / "books.parquet", tmp_path / "deltas.parquet", tmp_path / "trades.parquet"

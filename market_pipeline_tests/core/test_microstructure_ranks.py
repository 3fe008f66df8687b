"""Update-frequency ranks: the per-hour as-of joins equal one whole-day as-of join (the definition),
including deltas before the day's first snapshot, across hour boundaries and outside the day,
snapshots with absent levels or out of time order and deltas whose time goes back."""

from __future__ import annotations

import base64
from decimal import Decimal

import duckdb
import numpy as np
import polars as pl
import pyarrow.parquet as pq
import pytest

from market_pipeline.core.quality.microstructure import compute_microstructure
from market_pipeline_tests.support.rank_world import DAY, HOUR, LEVELS, START, rank_day


def _whole_day_ranks(books, deltas) -> list[int]:
    bid = " + ".join(f"coalesce(CAST(s.b{i} > d.p AS INTEGER), 0)" for i in range(LEVELS))
    ask = " + ".join(f"coalesce(CAST(s.a{i} < d.p AS INTEGER), 0)" for i in range(LEVELS))
    snaps = ", ".join(
        f"CAST(round(bid_{i}_price / 0.01) AS BIGINT) AS b{i}, CAST(round(ask_{i}_price / 0.01) AS BIGINT) AS a{i}"
        for i in range(LEVELS)
    )
    rows = duckdb.sql(
        f"""SELECT least(CASE WHEN d.side_is_bid THEN {bid} ELSE {ask} END, {LEVELS}) AS rank, count(*)
        FROM (SELECT received_time, side_is_bid, CAST(round(price / 0.01) AS BIGINT) AS p
              FROM read_parquet('{deltas}')) d
        ASOF JOIN (SELECT received_time, {snaps} FROM read_parquet('{books}') WHERE trigger = 'snapshot') s
        ON d.received_time > s.received_time GROUP BY ALL"""
    ).fetchall()
    counts = [0] * (LEVELS + 1)
    for rank, n in rows:
        counts[rank] = n
    return counts


# Row groups of 1,500 rows: hours begin and end inside groups, some hours span several.
ROW_GROUPS = pytest.mark.parametrize("delta_row_group_rows", [None, 1_500])


@ROW_GROUPS
def test_hourly_as_of_joins_equal_the_whole_day_join(tmp_path, delta_row_group_rows):
    books, deltas, trades = rank_day(tmp_path, delta_row_group_rows)
    result = compute_microstructure(books, deltas, trades, Decimal("0.01"), Decimal("0.1"), DAY, tmp_path / "spill")
    expected = _whole_day_ranks(books, deltas)
    assert result.rank_counts == expected
    assert sum(expected) < 20_000  # some deltas precede every snapshot
    assert result.daily["book_updates_unranked"] == 20_000 - sum(expected)
    assert all(n > 0 for n in expected)


@ROW_GROUPS
@pytest.mark.parametrize("encrypted", [False, True])
def test_hourly_messages_are_distinct_sequence_numbers_in_and_out_of_order(tmp_path, delta_row_group_rows, encrypted):
    """Each hour's messages are its count(DISTINCT sequence_number) as SQL counts it: numbers in
    order (counted as changes by a kernel), going back (the hour read again and hashed), and null
    (no number); in an encrypted lake too (the hour read again through `parquet_io`)."""
    from market_pipeline.core import context
    from market_pipeline.core.lake import parquet_io
    from market_pipeline.core.quality.update_ranks import delta_pass

    books, deltas, _ = rank_day(tmp_path)
    frame = pl.read_parquet(deltas)
    hour = (pl.col("received_time") - START) // HOUR
    sequence = (
        pl.when(hour == 5)
        .then(pl.col("sequence_number") % 7)  # going back, and a number again after others
        .when((hour == 9) & (pl.int_range(pl.len()) % 4 == 0))
        .then(None)
        .otherwise(pl.col("sequence_number"))
    )
    frame.with_columns(sequence.alias("sequence_number")).write_parquet(deltas, row_group_size=delta_row_group_rows)
    expected = duckdb.sql(
        f"""SELECT least(greatest((received_time - {START}) // {HOUR}, 0), 23) AS hour,
        count(DISTINCT sequence_number) AS book_messages, count(*) AS book_delta_rows
        FROM read_parquet('{deltas}') GROUP BY ALL ORDER BY hour"""
    ).pl()
    lake = context.CoreContext(master_key=base64.b64encode(bytes(range(32))).decode(), lake_encrypted=encrypted)
    with context.using(lake):
        if encrypted:
            for path in (books, deltas):
                parquet_io.write_table(pq.read_table(path), path, row_group_size=delta_row_group_rows)
        hourly = delta_pass(books, deltas, Decimal("0.01"), LEVELS, START, 10).hourly
    assert hourly.sort("hour").to_dicts() == expected.to_dicts()


@ROW_GROUPS
def test_the_skew_sample_is_evenly_spaced_rows_of_the_pass_exactly(tmp_path, delta_row_group_rows):
    """The clock-skew sample drawn in the rank pass: `(received_time - origin_time) / 1e9` (as the
    SQL it replaced computed it) of the rows at evenly spaced positions, counting rows hour by hour
    in file order; every row when the day has fewer rows than the sample."""
    from market_pipeline.core.quality.microstructure import SKEW_SAMPLE_ROWS
    from market_pipeline.core.quality.update_ranks import delta_pass, sample_positions

    books, deltas, trades = rank_day(tmp_path)
    rng = np.random.default_rng(5)
    frame = pl.read_parquet(deltas)
    frame = frame.with_columns(  # skews of both signs and every size up to ~3 s
        (pl.col("received_time") - pl.Series(rng.integers(-2_000_000_000, 3_000_000_000, frame.height))).alias(
            "origin_time"
        )
    )
    frame.write_parquet(deltas, row_group_size=delta_row_group_rows)
    in_pass_order = frame.with_row_index("row").sort(
        ((pl.col("received_time") - START) // HOUR).clip(0, 23), "row", maintain_order=True
    )
    # Divided as IEEE division (numpy, DuckDB), not polars' multiplication by the reciprocal.
    skews = (in_pass_order["received_time"] - in_pass_order["origin_time"]).to_numpy().astype(np.float64) / 1e9

    assert sample_positions(20_000, 7).tolist() == [0, 2857, 5714, 8571, 11428, 14285, 17142]
    assert sample_positions(5, 7).tolist() == [0, 1, 2, 3, 4]
    for size in (7, SKEW_SAMPLE_ROWS, 50_000):
        got = delta_pass(books, deltas, Decimal("0.01"), LEVELS, START, size).skew_sample_seconds
        assert got == skews[sample_positions(frame.height, size)].tolist()
    result = compute_microstructure(books, deltas, trades, Decimal("0.01"), Decimal("0.1"), DAY, tmp_path / "spill")
    assert len(result.skew_sample_seconds) == SKEW_SAMPLE_ROWS
    # What DuckDB computes for those rows, value for value.
    sql = duckdb.sql(f"SELECT (received_time - origin_time) / 1e9 FROM read_parquet('{deltas}')").fetchall()
    assert sorted(result.skew_sample_seconds) == sorted(
        v for (v,) in [sql[i] for i in in_pass_order["row"].gather(sample_positions(frame.height, SKEW_SAMPLE_ROWS))]
    )


def test_hours_without_snapshots_rank_against_the_last_one_before_them(tmp_path):
    """No snapshot from 03:00 to 07:00 nor after 21:00: those hours' deltas rank against the last
    snapshot of an earlier hour, carried from hour to hour, as in the whole-day join."""
    from market_pipeline.core.quality.update_ranks import delta_pass

    books, deltas, _trades = rank_day(tmp_path)
    hour_of = (pl.col("received_time") - START) // HOUR
    pl.read_parquet(books).filter(~hour_of.is_between(3, 6) & (hour_of < 21)).write_parquet(books)

    assert delta_pass(books, deltas, Decimal("0.01"), LEVELS, START, 10).rank_counts == _whole_day_ranks(books, deltas)

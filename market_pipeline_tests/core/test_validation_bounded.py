"""validation_reports in bounded memory gives the figures of the whole-day readers, exactly.

The reference below is the former `validate_instrument_day` (every table read whole with
polars); the bounded one reads the raw deltas in row batches (tiny ones here, so messages,
gaps and the worst rows straddle batches) and the other tables through lazy scans.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl
import pytest

from market_pipeline_tests.support.dagster_instance import assets_named
from market_pipeline_tests.support.quality_world import CLEAN, FAULTED, INSTRUMENT, RAW_AND_BOOKS, world_run


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """The quality world's two days (support/quality_world.py: the same settings, one clean and one
    faulted day), but only what validation_reports reads: one run of the raw tables and the books,
    without validation_reports itself and the checks (the tests call the validation directly)."""
    with world_run(tmp_path_factory.mktemp("quality_bounded"), lambda defs: assets_named(defs, *RAW_AND_BOOKS)) as run:
        assert run["result"].success
        yield run


def _reference(files, counters):
    from market_pipeline.core.lake.schemas import book_level_columns
    from market_pipeline.core.quality.fidelity import capture_fidelity
    from market_pipeline.core.quality.gaps import gap_summary, worst_gaps
    from market_pipeline.core.quality.precision import max_decimals
    from market_pipeline.core.quality.precision_figures import DELTA_VALUE_COLUMNS, TRADE_VALUE_COLUMNS, worst_precision
    from market_pipeline.core.quality.validation import HOURLY_SCHEMA
    from market_pipeline_tests.support import whole_day_reference as m

    instrument, day = files.instrument, files.day
    deltas = m.read_deltas(files)
    tops = m.read_snapshot_tops(files)
    trades = pl.read_parquet(files.require(files.trades))
    agreement = m.read_agreement(files, tops)
    books = m.read_books_touch(files)
    events = m.gaps(files, deltas, tops)
    gap_figures = gap_summary(events)
    hourly_gaps = m.hourly_gaps(events, agreement, day)
    skew = m.skew_messages(deltas)
    flags = pl.concat(
        [
            m.precision_flags(deltas, DELTA_VALUE_COLUMNS, instrument),
            m.precision_flags(trades, TRADE_VALUE_COLUMNS, instrument),
        ],
        how="diagonal_relaxed",
    )
    snapshot_flags = m.precision_flags(
        pl.read_parquet(files.require(files.snapshots)),
        {c: "price" if c.endswith("_price") else "size" for c in book_level_columns()},
        instrument,
    )
    snap_off, snap_loss = int(snapshot_flags["off_grid"].sum()), int((~snapshot_flags["off_grid"]).sum())
    synced = pl.read_parquet(files.books, columns=["received_time", "synced"])  # the whole books file
    per_hour = synced.group_by(m.hour_of("received_time", day).alias("hour")).agg(
        pl.len().cast(pl.Int64).alias("book_rows"), (~pl.col("synced")).sum().cast(pl.Int64).alias("unsynced_rows")
    )
    hourly_sync = (
        pl.DataFrame({"hour": pl.Series(range(24), dtype=pl.Int32)}).join(per_hour, on="hour", how="left").fill_null(0)
    )
    row = {
        "messages": skew.height,
        "delta_rows": deltas.height,
        "trades": trades.height,
        "gaps_detected": int(hourly_gaps["gaps_detected"].sum()),
        "gaps_filled": int(hourly_gaps["gaps_filled"].sum()),
        "gaps_unrepaired": gap_figures["gaps_unrepaired"],
        "sequence_jumps": gap_figures["sequence_jumps"],
        "chain_breaks": 0,  # not a capture
        "book_rows": synced.height,
        "unsynced_rows": int((~synced["synced"]).sum()),
        "unsynced_share": int((~synced["synced"]).sum()) / synced.height,
        "missing_sequence_numbers": gap_figures["missing_sequence_numbers"],
        "out_of_order_messages": gap_figures["out_of_order_messages"],
        **m.agreement_summary(agreement, instrument),
        **skew.select(m.skew_aggregates()).row(0, named=True),
        "off_grid_values": snap_off + int(flags["off_grid"].sum()),
        "precision_loss_events": snap_loss + int((~flags["off_grid"]).sum()),
        "price_decimals_max": max_decimals(deltas["price"]),
        "crossed_events": None if counters is None else counters.get("crossed_events"),
        "vendor_crossed_snapshots": m.crossed_rows(tops).height,
        "rebuilt_crossed_rows": m.crossed_rows(books).height,
        "trades_at_or_inside_touch_share": m.trades_at_or_inside_touch_share(trades, books),
        **capture_fidelity(files.fidelity),
    }
    hour_start = dt.datetime.combine(day, dt.time())
    hourly = (
        hourly_gaps.join(hourly_sync, on="hour")
        .join(m.hourly_skew(skew, day), on="hour")
        .with_columns(
            pl.lit(day).alias("dt"),
            pl.lit(instrument.exchange).alias("exchange"),
            pl.lit(instrument.symbol).alias("symbol"),
            (pl.lit(hour_start) + pl.duration(hours=pl.col("hour"))).alias("hour"),
        )
        .select(list(HOURLY_SCHEMA))
        .cast(HOURLY_SCHEMA)
    )
    details = {
        "gaps": worst_gaps(events),
        "skew": m.skew_rows(skew),
        "precision": worst_precision(flags),
        "agreement": m.agreement_rows(agreement),
        "hourly_mid_dev_ticks": agreement.group_by(m.hour_of("received_time", day).alias("hour"))
        .agg((pl.col("mid_deviation_half_ticks").abs().max() / 2).alias("max"))
        .sort("hour"),
    }
    return row, hourly, details


@pytest.mark.parametrize("day", [CLEAN, FAULTED])
@pytest.mark.parametrize("batch_rows", [997, None])
def test_bounded_validation_equals_whole_day_readers(world, monkeypatch, day, batch_rows):
    from market_pipeline.core.quality import lake_day
    from market_pipeline.core.quality.validation import validate_instrument_day
    from market_pipeline.defs.common.checks import day_files
    from market_pipeline.defs.common.recorded import rebuild_counters

    settings = world["settings"]
    instrument = next(i for i in settings.universe if i.key == INSTRUMENT)
    files = day_files(settings, instrument, day)
    counters = rebuild_counters(world["instance"], INSTRUMENT, day)
    if batch_rows:
        monkeypatch.setattr(lake_day, "BATCH_ROWS", batch_rows)
    got = validate_instrument_day(files, counters)
    row, hourly, details = _reference(files, counters)
    assert {k: got.row[k] for k in row} == row
    assert got.hourly.equals(hourly)
    assert got.details["hourly_mid_dev_ticks"].equals(details["hourly_mid_dev_ticks"])
    for name in ("gaps", "precision", "agreement"):
        assert got.details[name] == details[name], name
    # The worst skew rows: the same |skew| values (the reference's order of ties is unspecified).
    assert [abs(r["skew_ms"]) for r in got.details["skew"]] == [abs(r["skew_ms"]) for r in details["skew"]]
    if day == FAULTED:
        assert row["sequence_jumps"] > 0 and row["precision_loss_events"] > 0


DAY = dt.date(2024, 3, 1)


def test_skew_quantiles_equal_polars():
    """Quantiles located through a day-statistics histogram of the skews (ns) equal polars' over
    the same skews in ms, per hour and over the day, whatever the batches of the pass."""
    from market_pipeline.core.day_clock import NS_PER_HOUR, day_start_ns
    from market_pipeline.core.quality.skew import SkewQuantiles
    from market_pipeline.core.quality.skew import skew_ms as _skew_ms
    from market_pipeline_tests.support.skew_reference import skew_buckets

    rng = np.random.default_rng(3)
    quantiles = (0.01, 0.5, 0.99)
    for trial in range(60):
        n = int(rng.integers(0, 5000))
        skew_ns = [
            (rng.lognormal(1, 2, n) * 1e6 * rng.choice([-1, 1], n)).astype(np.int64),
            rng.integers(-5, 5, n),
            rng.integers(0, 10**9, n) - rng.integers(0, 10**7, n),
            np.full(n, 3_500_000),
        ][trial % 4]
        hours = rng.integers(0, 24, n) if trial % 3 else np.zeros(n, np.int64)
        bucket, width = skew_buckets(skew_ns)
        histogram = (
            pl.DataFrame({"hour": hours.astype(np.int32), "bucket_ns": bucket, "width_ns": width})
            .group_by("hour", "bucket_ns", "width_ns")
            .agg(pl.len().cast(pl.Int64).alias("count"))
        )
        exact = SkewQuantiles(histogram, quantiles, DAY)
        received = day_start_ns(DAY) + hours * NS_PER_HOUR + rng.integers(0, NS_PER_HOUR, n)
        for s in range(0, n, 777):
            part = slice(s, s + 777)
            exact.collect(received[part], received[part] - skew_ns[part], np.ones(len(received[part]), bool))
        found = exact.result("test")
        frame = pl.DataFrame({"g": hours, "v": _skew_ms(skew_ns, np.zeros(n, np.int64))})
        for group in range(25):
            part = frame if group == 24 else frame.filter(pl.col("g") == group)
            expected = [part["v"].quantile(q, "linear") for q in quantiles] if part.height else [None] * 3
            assert found[group] == expected, (trial, group)


def _former_microstructure_sql(books, deltas, tick, lot, day) -> tuple[dict, pl.DataFrame, pl.DataFrame]:
    """The book shape and per-hour messages as pipeline_metrics computed them in DuckDB SQL over the
    whole books and deltas files: (daily shape row, hourly shape, hourly messages)."""
    import duckdb

    from market_pipeline.core.quality.microstructure import DEPTH_BPS

    levels = sum(1 for name in pl.read_parquet_schema(books) if name.startswith("bid_") and name.endswith("_price"))
    start = int(dt.datetime.combine(day, dt.time(), dt.UTC).timestamp()) * 1_000_000_000
    hour = f"least(greatest((received_time - {start}) // 3600000000000, 0), 23)"
    cols = ", ".join(
        f"CAST(round(CAST({side}_{i}_price AS DOUBLE) / {float(tick)!r}) AS BIGINT) AS {short}{i}, "
        f"CAST(round(CAST({side}_{i}_size AS DOUBLE) / {float(lot)!r}) AS BIGINT) AS {short}l{i}"
        for side, short in (("bid", "b"), ("ask", "a"))
        for i in range(levels)
    )
    bounds = ", ".join(
        f"-((-(b0 + a0) * {10_000 - n}) // 20000) AS lo{n}, ((b0 + a0) * {10_000 + n}) // 20000 AS hi{n}"
        for n in DEPTH_BPS
    )
    depth = ", ".join(
        " + ".join(
            f"CASE WHEN {s}{i} BETWEEN lo{n} AND hi{n} THEN {s}l{i} ELSE 0 END"
            for s in ("b", "a")
            for i in range(levels)
        )
        + f" AS depth_{n}bps_lots"
        for n in DEPTH_BPS
    )
    means = ", ".join(f"avg(depth_{n}bps_lots) * {float(lot)!r} AS depth_{n}bps_mean" for n in DEPTH_BPS)
    with duckdb.connect() as con:
        con.execute(
            f"""CREATE TEMP TABLE shape AS SELECT hour, a0 - b0 AS spread_ticks, {depth}
            FROM (SELECT *, {bounds} FROM (SELECT {hour} AS hour, {cols} FROM read_parquet('{books}')
                  WHERE trigger = 'snapshot') WHERE b0 IS NOT NULL AND a0 IS NOT NULL)"""
        )
        daily = con.execute(
            f"""SELECT count(*) AS snapshots, quantile_disc(spread_ticks, [0.5, 0.9, 0.99]) AS q,
            avg(spread_ticks) AS spread_mean_ticks, {means} FROM shape"""
        ).pl()
        hourly = con.execute(
            f"""SELECT hour, count(*) AS snapshots, quantile_disc(spread_ticks, 0.5) AS spread_p50_ticks, {means}
            FROM shape GROUP BY hour ORDER BY hour"""
        ).pl()
        messages = con.execute(
            f"""SELECT {hour} AS hour, count(DISTINCT sequence_number) AS book_messages, count(*) AS book_delta_rows
            FROM read_parquet('{deltas}') GROUP BY hour ORDER BY hour"""
        ).pl()
    return daily.row(0, named=True), hourly, messages


@pytest.mark.parametrize("stored", [True, False], ids=["rebuild_shape_file", "from_books"])
def test_microstructure_equals_former_sql(world, tmp_path, stored):
    """pipeline_metrics' book shape (exact integers: the shape file the rebuild stored beside the
    books, or computed from the books' level columns) and messages per hour (counted in the rank
    pass) equal the former whole-file DuckDB SQL, to the last bit (on the faulted day; the clean one
    takes the same path)."""
    from market_pipeline.core.lake.paths import books_shape_path
    from market_pipeline.core.quality.book_shape import read_shape
    from market_pipeline.core.quality.microstructure import DEPTH_BPS, compute_microstructure
    from market_pipeline.defs.common.checks import day_files

    settings, day = world["settings"], FAULTED
    instrument = next(i for i in settings.universe if i.key == INSTRUMENT)
    files = day_files(settings, instrument, day)
    tick, lot = instrument.tick_size, instrument.lot_size
    shape = books_shape_path(settings.lake_dir, instrument.exchange, instrument.symbol, day)
    assert read_shape(shape, files.books) is not None  # the rebuild wrote it, for these books
    got = compute_microstructure(
        files.books, files.deltas, files.trades, tick, lot, day, tmp_path, shape=shape if stored else None
    )
    daily, hourly, messages = _former_microstructure_sql(files.books, files.deltas, tick, lot, day)
    assert got.daily["snapshots"] == daily["snapshots"] > 0
    assert [got.daily[f"spread_p{p}_ticks"] for p in (50, 90, 99)] == daily["q"]
    for name in ("spread_mean_ticks", *[f"depth_{n}bps_mean" for n in DEPTH_BPS]):
        assert got.daily[name] == daily[name], name
    ours = got.hourly.filter(pl.col("snapshots") > 0)
    assert ours.select(hourly.columns).equals(hourly.cast(ours.select(hourly.columns).schema))
    ours = got.hourly.filter(pl.col("book_delta_rows") > 0)
    assert ours.select(messages.columns).equals(messages.cast(ours.select(messages.columns).schema))
    assert got.daily["book_messages"] == messages["book_messages"].sum()


def test_shape_file_of_other_books_is_not_used(tmp_path):
    """A shape file describes the books file it was written with (rows and bytes): after the books
    change (a rebuild that crashed between the two writes, a books file restored from a backup) it
    is ignored, and the metrics compute the shape from the books."""
    import pyarrow as pa

    from market_pipeline.core.lake import parquet_io
    from market_pipeline.core.quality.book_shape import SHAPE_SCHEMA, read_shape, write_shape

    books, shape_path = tmp_path / "books.parquet", tmp_path / "shape.parquet"
    parquet_io.write_table(pa.table({"x": [1, 2, 3]}), books)
    row = {"hour": 0, "spread_ticks": 1, **dict.fromkeys(SHAPE_SCHEMA.names[2:], 5)}
    shape = pa.Table.from_pylist([row], SHAPE_SCHEMA)
    write_shape(shape, shape_path, books)
    assert read_shape(shape_path, books).equals(shape)
    parquet_io.write_table(pa.table({"x": [1, 2, 3, 4]}), books)
    assert read_shape(shape_path, books) is None
    assert read_shape(tmp_path / "absent.parquet", books) is None


@pytest.mark.parametrize("day", [CLEAN, FAULTED])
def test_the_rebuild_stores_the_metrics_pass_over_its_deltas(world, tmp_path, day):
    """The books stage hands the deltas it reads and the snapshot rows it writes to the metrics'
    pass over the deltas (`delta_pass_stream`) and stores its figures beside the books: on the
    clean day they are `update_ranks.delta_pass`'s, figure for figure, and the metrics take them
    from there; the faulted day has a delta out of time order, so nothing is stored for it and the
    metrics run the pass."""
    from market_pipeline.core.day_clock import day_start_ns
    from market_pipeline.core.lake.paths import books_delta_pass_path
    from market_pipeline.core.quality.delta_pass_stream import read_delta_pass
    from market_pipeline.core.quality.microstructure import SKEW_SAMPLE_ROWS, compute_microstructure
    from market_pipeline.core.quality.update_ranks import delta_pass
    from market_pipeline.defs.common.checks import day_files

    settings = world["settings"]
    instrument = next(i for i in settings.universe if i.key == INSTRUMENT)
    files = day_files(settings, instrument, day)
    tick, levels = instrument.tick_size, settings.book.depth
    stored_path = books_delta_pass_path(settings.lake_dir, instrument.exchange, instrument.symbol, day)
    stored = read_delta_pass(stored_path, files.books, files.deltas, tick, levels, day_start_ns(day), SKEW_SAMPLE_ROWS)
    expected = delta_pass(files.books, files.deltas, tick, levels, day_start_ns(day), SKEW_SAMPLE_ROWS)
    if day == CLEAN:
        assert stored is not None
        assert stored.rank_counts == expected.rank_counts and sum(expected.rank_counts) > 0
        assert stored.hourly.equals(expected.hourly)
        assert stored.skew_sample_seconds == expected.skew_sample_seconds
    else:
        assert stored is None and not stored_path.exists()
    args = (files.books, files.deltas, files.trades, tick, instrument.lot_size, day, tmp_path)
    from_stored = compute_microstructure(*args, delta_pass=stored_path)
    from_pass = compute_microstructure(*args)
    assert from_stored.rank_counts == from_pass.rank_counts == expected.rank_counts
    assert from_stored.hourly.equals(from_pass.hourly)
    assert from_stored.daily == from_pass.daily
    assert from_stored.skew_sample_seconds == from_pass.skew_sample_seconds


def test_an_error_in_the_metrics_pass_stops_the_rebuild(world, tmp_path):
    """The delta pass runs on a thread of the rebuild's own: an error there is the rebuild's, and
    its books are not put in place."""
    from market_pipeline.core.book.fixed_point import Grid
    from market_pipeline.core.book.rebuild import rebuild_day
    from market_pipeline.defs.common.checks import day_files

    class Broken:
        def deltas(self, batch):
            raise ValueError("broken delta pass")

        end_of_deltas = snapshots = write = lambda self, *args: None

    settings = world["settings"]
    instrument = next(i for i in settings.universe if i.key == INSTRUMENT)
    files = day_files(settings, instrument, CLEAN)
    with pytest.raises(ValueError, match="broken delta pass"):
        rebuild_day(
            files.deltas,
            files.snapshots,
            tmp_path / "books.parquet",
            None,
            tmp_path / "checkpoint.npz",
            Grid(instrument.tick_size, instrument.lot_size),
            CLEAN,
            contiguous=True,
            delta_pass=Broken(),
        )
    assert not (tmp_path / "books.parquet").exists()


def test_the_rebuild_writes_its_agreement_and_shape_rows_delta_encoded(world):
    """The agreement rows and the shape rows, written on the kernel's thread, are encoded as
    `parquet_io.delta_writer_options` says: integers delta-encoded, LZ4, no dictionary pages
    (Parquet's defaults built a dictionary of every time and sequence number)."""
    import pyarrow.parquet as pq

    from market_pipeline.core.lake.paths import books_shape_path
    from market_pipeline.defs.common.checks import day_files

    settings = world["settings"]
    instrument = next(i for i in settings.universe if i.key == INSTRUMENT)
    files = day_files(settings, instrument, CLEAN)
    shape = books_shape_path(settings.lake_dir, instrument.exchange, instrument.symbol, CLEAN)
    for path in (files.agreement, shape):
        metadata = pq.ParquetFile(path).metadata
        assert metadata.num_rows > 0, path
        group = metadata.row_group(0)
        for i in range(group.num_columns):
            column = group.column(i)
            assert column.compression == "LZ4", (path, column.path_in_schema)
            assert not any("DICTIONARY" in e for e in column.encodings), (path, column.path_in_schema)
            if column.physical_type == "INT64":
                assert "DELTA_BINARY_PACKED" in column.encodings, (path, column.path_in_schema)

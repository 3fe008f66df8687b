"""OHLCV bars (`ohlcv_bars`): the stage's bars against independent computations (polars
`group_by_dynamic`, DuckDB `time_bucket`), its checks on planted faults, the absent-bar rule, one
bad day in a range run, and the interval setting."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal
from pathlib import Path

import numpy as np
import polars as pl
import polars.selectors as cs
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from market_pipeline.core.day_clock import day_start_ns
from market_pipeline_tests.support.dagster_instance import assets_named, code_location, range_tags

DAY, BAD_DAY = dt.date(2024, 3, 1), dt.date(2024, 3, 2)
INSTRUMENT = "BINANCE:BTC-USDT"
TICK, LOT = Decimal("0.01"), Decimal("0.000001")  # config.yaml's grid for BINANCE:BTC-USDT
MINUTE_NS = 60 * 10**9


def write_trades(path: Path, day: dt.date, rows: int = 2_000, seed: int = 7) -> pl.DataFrame:
    """Trades on the grid in a few busy hours (so most minutes have none), with equal origin
    times, and a few trades whose origin_time lies just before the UTC day."""
    rng = np.random.default_rng(seed)
    start = day_start_ns(day)
    hours = rng.choice([0, 1, 5, 13, 23], size=rows)
    origin = np.sort(start + hours * 3_600 * 10**9 + rng.integers(0, 3_600 * 10**9, size=rows))
    origin[10:20] = origin[10]  # ten trades at the same instant: file order decides open and close
    origin[:3] = start - np.array([3, 2, 1]) * 10**6  # before the day: in no bar
    ticks = 6_000_000 + np.cumsum(rng.integers(-3, 4, size=rows))
    frame = pl.DataFrame(
        {
            "origin_time": origin,
            "received_time": origin + 10**6,
            "side": rng.choice(["buy", "sell"], size=rows),
            "price": [round(int(t) * 0.01, 2) for t in ticks],
            "quantity": [round(int(q) * 1e-6, 6) for q in rng.integers(1, 3_000_000, size=rows)],
            "trade_id": [str(i) for i in range(rows)],
        }
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.write_parquet(path)
    return frame


def write_books(path: Path, trades: pl.DataFrame, day: dt.date) -> pa.Table:
    """A rebuilt-books file (the columns the bars read) with an in-sync touch around the last
    trade's price every 5 s, and one unsynced row that must be ignored."""
    from market_pipeline.core.book.fixed_point import decimal_array

    start = day_start_ns(day)
    times = np.arange(start, start + 86_400 * 10**9, 5 * 10**9, dtype=np.int64)
    prices = trades.sort("origin_time").select("origin_time", "price").filter(pl.col("origin_time") >= start)
    at = np.clip(np.searchsorted(prices["origin_time"].to_numpy(), times, side="right") - 1, 0, None)
    last = np.rint(prices["price"].to_numpy()[at] * 100).astype(np.int64)
    synced = np.ones(len(times), dtype=bool)
    synced[107] = False  # 00:08:55, the last row before the end of bar 00:08, with a touch 10.00 higher
    last[107] += 1_000
    table = pa.table(
        {
            "origin_time": pa.array(times),
            "received_time": pa.array(times + 10**6),
            "synced": pa.array(synced),
            "bid_0_price": decimal_array(np.ascontiguousarray(last - 5), TICK),
            "ask_0_price": decimal_array(np.ascontiguousarray(last + 5), TICK),
        }
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
    return table


@pytest.fixture
def settings(tmp_path, monkeypatch):
    from market_pipeline.settings import load_settings

    monkeypatch.setenv("PIPELINE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("PIPELINE_INSTRUMENTS", INSTRUMENT)
    monkeypatch.setenv("PIPELINE_START_DATE", "2024-01-01")
    monkeypatch.setenv("PIPELINE_BARS__INTERVALS", "1m,5m,1h")
    return load_settings()


@pytest.fixture
def lake_day(settings):
    """One instrument-day of raw trades and rebuilt books in the lake, and its bars built."""
    from market_pipeline.core.bars.build import build_bar_day
    from market_pipeline.defs.bars.assets import BarFiles

    (instrument,) = settings.universe
    files = BarFiles.of(settings, instrument, DAY)
    trades = write_trades(files.trades, DAY)
    write_books(files.books, trades, DAY)
    result = build_bar_day(
        files.trades, files.books, files.bars, instrument, DAY, settings.bars.bar_intervals, settings.data_dir / "tmp"
    )
    return settings, instrument, files, trades, result


def independent_minute_bars(trades: pl.DataFrame) -> pl.DataFrame:
    """1-minute bars by polars `group_by_dynamic` over the raw trades, prices and sizes as decimals
    parsed from their shortest spelling (not through the tick grid)."""
    start = day_start_ns(DAY)
    day = trades.filter(pl.col("origin_time").is_between(start, start + 86_400 * 10**9 - 1))
    quote = [Decimal(repr(p)) * Decimal(repr(q)) for p, q in day.select("price", "quantity").iter_rows()]
    return (
        day.with_columns(
            pl.col("origin_time").cast(pl.Datetime("ns", "UTC")).alias("time"),
            pl.col("price").cast(pl.String).str.to_decimal(scale=2).alias("price"),
            pl.col("quantity").cast(pl.String).str.to_decimal(scale=6).alias("quantity"),
            pl.Series("quote", quote, dtype=pl.Decimal(38, 8)),
        )
        .sort("time", maintain_order=True)  # stable: equal times keep file order
        .group_by_dynamic("time", every="1m", closed="left", label="left")
        .agg(
            pl.col("price").first().alias("open"),
            pl.col("price").max().alias("high"),
            pl.col("price").min().alias("low"),
            pl.col("price").last().alias("close"),
            pl.col("quantity").sum().alias("volume"),
            pl.col("quote").sum().alias("quote_volume"),
            pl.col("quantity").filter(pl.col("side") == "buy").sum().alias("buy_volume"),
            pl.len().cast(pl.Int64).alias("trade_count"),
        )
        .rename({"time": "bar_start"})
    )


def test_one_minute_bars_equal_polars_group_by_dynamic(lake_day):
    settings, instrument, files, trades, result = lake_day
    bars = pl.read_parquet(files.bars)
    minute = bars.filter(pl.col("interval") == "1m").sort("bar_start")
    expected = independent_minute_bars(trades)
    columns = ["bar_start", "open", "high", "low", "close", "volume", "quote_volume", "buy_volume", "trade_count"]
    as_values = [cs.decimal().cast(pl.String).str.to_decimal(scale=12)]  # one scale for comparing
    assert (
        minute.select(columns).with_columns(as_values).to_dicts()
        == expected.select(columns).with_columns(as_values).to_dicts()
    )
    assert result.trades == trades.height and result.trades_outside_day == 3 and result.off_grid_trades == 0
    # Absent, never empty: bars only where trades are, every trade of the day in one bar per interval.
    assert result.bars["1m"] == minute.height < 1_440 and minute["trade_count"].min() >= 1
    for name in ("1m", "5m", "1h"):
        assert bars.filter(pl.col("interval") == name)["trade_count"].sum() == trades.height - 3
    assert result.bars["1h"] == 5
    # VWAP: quote volume / volume rounded half up to the tick's decimals + 4.
    for row in minute.head(50).iter_rows(named=True):
        assert abs(row["vwap"] - row["quote_volume"] / row["volume"]) <= Decimal("0.0000005")
    # Mid and spread: the last in-sync book row before the bar's end.
    books = pl.read_parquet(files.books).filter("synced").sort("origin_time")
    ends = minute.select((pl.col("bar_start").dt.epoch("ns") + MINUTE_NS - 1).alias("origin_time"), "mid", "spread")
    touch = ends.join_asof(books, on="origin_time", strategy="backward")
    assert [2 * m for m in touch["mid"]] == [
        b + a for b, a in zip(touch["bid_0_price"], touch["ask_0_price"], strict=True)
    ]
    assert set(touch["spread"].to_list()) == {Decimal("0.10")}
    eight = minute.filter(pl.col("bar_start") == dt.datetime(2024, 3, 1, 0, 8, tzinfo=dt.UTC))
    assert eight["book_time"].to_list() == [dt.datetime(2024, 3, 1, 0, 8, 50)]  # UTC; not the unsynced row


def test_the_touch_of_every_interval_is_the_last_in_sync_row_before_its_end(settings):
    """Mid, spread and book_time of each bar of 1m, 5m and 1h against an as-of join over every book
    row: rows sharing an origin_time (the last in file order wins), a row before the day, rows
    right on a bar's end (not before it), and unsynced or one-sided rows that never count."""
    from market_pipeline.core.bars.build import build_bar_day
    from market_pipeline.core.book.fixed_point import decimal_array
    from market_pipeline.defs.bars.assets import BarFiles

    (instrument,) = settings.universe
    files = BarFiles.of(settings, instrument, DAY)
    write_trades(files.trades, DAY, rows=3_000, seed=11)
    start, rng = day_start_ns(DAY), np.random.default_rng(3)
    on_ends = start + np.arange(1, 1_440, 7) * MINUTE_NS  # some exactly at a bar's end
    times = np.sort(
        np.concatenate(
            [[start - 10**9], on_ends, start + rng.integers(0, 86_400 * 10**9, 4_000), np.repeat(on_ends[::9] - 1, 3)]
        )
    )
    bids = 6_000_000 + rng.integers(-500, 500, len(times))
    synced, bid_valid = rng.random(len(times)) > 0.1, rng.random(len(times)) > 0.05
    files.books.parent.mkdir(parents=True)
    pq.write_table(
        pa.table(
            {
                "origin_time": pa.array(times),
                "received_time": pa.array(times + 10**6),
                "synced": pa.array(synced),
                "bid_0_price": pa.array(
                    [int(b) * TICK if v else None for b, v in zip(bids, bid_valid, strict=True)], pa.decimal128(18, 2)
                ),
                "ask_0_price": decimal_array(np.ascontiguousarray(bids + rng.integers(1, 20, len(times))), TICK),
            }
        ),
        files.books,
        row_group_size=1_000,
    )
    build_bar_day(
        files.trades, files.books, files.bars, instrument, DAY, settings.bars.bar_intervals, settings.data_dir / "tmp"
    )

    books = (
        pl.read_parquet(files.books)
        .filter(pl.col("synced") & pl.col("bid_0_price").is_not_null())
        .group_by("origin_time", maintain_order=True)
        .last()  # equal origin times: the last row in file order
        .sort("origin_time")
        .with_columns(pl.col("origin_time").alias("expected_book_time"))
    )
    bars = pl.read_parquet(files.bars)
    for interval, length in (("1m", MINUTE_NS), ("5m", 5 * MINUTE_NS), ("1h", 60 * MINUTE_NS)):
        ends = (
            bars.filter(pl.col("interval") == interval)
            .sort("bar_start")
            .select(
                (pl.col("bar_start").dt.epoch("ns") + length - 1).alias("origin_time"), "mid", "spread", "book_time"
            )
        )
        touch = ends.join_asof(books, on="origin_time", strategy="backward")
        assert ends.height > 0 and touch["bid_0_price"].null_count() == 0, interval
        assert touch["book_time"].dt.epoch("ns").to_list() == touch["expected_book_time"].to_list(), interval
        assert [2 * m for m in touch["mid"]] == [
            b + a for b, a in zip(touch["bid_0_price"], touch["ask_0_price"], strict=True)
        ], interval
        assert touch["spread"].to_list() == (touch["ask_0_price"] - touch["bid_0_price"]).to_list(), interval


def _plant(path: Path, frame: pl.DataFrame) -> None:
    """Replace the bars file's rows, keeping the counts in its metadata."""
    pq.write_table(frame.to_arrow().replace_schema_metadata(pq.read_schema(path).metadata), path)


def test_checks_pass_on_built_bars_and_fail_on_planted_faults(lake_day):
    from market_pipeline.defs.bars import checks

    settings, instrument, files, trades, _ = lake_day

    def run(check):
        return check.evaluate(None, settings, instrument, DAY)

    for check in checks.BARS_CHECKS:
        finding = run(check)
        assert finding.severity is None, (check.name, finding.summary)
    assert run(checks.missing_bars).figures["1h absent_bars"] == 24 - 5

    clean = pl.read_parquet(files.bars)
    first = pl.int_range(pl.len()) == 0
    _plant(files.bars, clean.with_columns(pl.when(first).then(pl.col("high") * 2).otherwise("low").alias("low")))
    found = run(checks.ohlc_consistency)
    assert found.severity == checks.ERROR and found.figures["bad_bars"] == 1 and found.worst_rows[0]["interval"] == "1m"

    _plant(files.bars, clean.with_columns(pl.when(first).then(None).otherwise("close").alias("close")))
    assert run(checks.no_nan).severity == checks.ERROR
    _plant(files.bars, clean.with_columns(pl.when(first).then(float("nan")).otherwise(1.0).alias("vwap")))
    assert run(checks.no_nan).figures["bad_bars"] == 1

    _plant(files.bars, clean.with_columns(pl.when(first).then(-pl.col("volume")).otherwise("volume")))
    assert run(checks.non_negative_volume).severity == checks.ERROR

    # The absent-bar rule: a lost bar, or an empty one, is an error.
    _plant(files.bars, clean.filter(~first))
    lost = run(checks.missing_bars)
    assert lost.severity == checks.ERROR and "1m: bars hold" in lost.summary
    empty = clean.head(1).with_columns(
        pl.col("bar_start").dt.offset_by("-1m"), pl.lit(0, dtype=pl.Int64).alias("trade_count")
    )
    _plant(files.bars, pl.concat([empty, clean]))
    assert "1m: 1 empty bar(s)" in run(checks.missing_bars).summary
    _plant(files.bars, clean)

    # A trade 1% above the touch: beyond the 10 bps tolerance.
    row = trades.filter(pl.col("origin_time") > day_start_ns(DAY)).head(1)
    off = row.with_columns(pl.col("price") * 1.01, pl.lit("planted").alias("trade_id"))
    pl.concat([trades, off]).write_parquet(files.trades)
    warned = run(checks.trades_within_touch)
    assert warned.severity == checks.WARN and warned.figures["off_touch_trades"] == 1
    assert warned.worst_rows[0]["trade_id"] == "planted" and warned.figures["max_off_touch_bps"] > 90


def test_a_day_without_trades_has_every_bar_absent(settings):
    from market_pipeline.core.bars.build import build_bar_day
    from market_pipeline.core.bars.figures import day_summary
    from market_pipeline.defs.bars import checks
    from market_pipeline.defs.bars.assets import BarFiles

    (instrument,) = settings.universe
    files = BarFiles.of(settings, instrument, DAY)
    write_books(files.books, write_trades(files.trades, DAY, rows=30), DAY)
    pl.read_parquet(files.trades).head(0).write_parquet(files.trades)
    build_bar_day(
        files.trades, files.books, files.bars, instrument, DAY, settings.bars.bar_intervals, settings.data_dir
    )

    assert pl.read_parquet(files.bars).height == 0
    finding = checks.missing_bars.evaluate(None, settings, instrument, DAY)
    assert finding.severity is None and finding.figures["1m absent_bars"] == 1_440
    summary = day_summary(files.bars)
    assert summary.select("interval", "bars", "trades").rows() == [("1h", 0, 0), ("1m", 0, 0), ("5m", 0, 0)]


def test_range_run_skips_a_bad_day_and_duckdb_time_bucket_agrees(settings):
    import dagster as dg
    import duckdb

    from market_pipeline.defs.bars.assets import BarFiles

    (instrument,) = settings.universe
    files = BarFiles.of(settings, instrument, DAY)
    write_books(files.books, write_trades(files.trades, DAY, rows=500), DAY)
    bad = BarFiles.of(settings, instrument, BAD_DAY)
    write_books(bad.books, write_trades(bad.trades, BAD_DAY, rows=50), BAD_DAY)
    bad.trades.write_bytes(b"not parquet")  # a corrupt input on the second day only

    defs = code_location(settings)
    bar_checks = [
        c for c in defs.asset_checks if any(k.asset_key.to_user_string() == "ohlcv_bars" for k in c.check_keys)
    ]
    result = dg.materialize(
        [*assets_named(defs, "ohlcv_bars", "ohlcv_bars_summary"), *bar_checks],  # in an ephemeral instance
        resources=defs.resources,
        tags=range_tags(DAY.isoformat(), BAD_DAY.isoformat()),
        raise_on_error=False,
    )
    assert result.success
    meta = {m.partition: m.metadata for m in result.asset_materializations_for_node("ohlcv_bars")}
    assert "skipped" not in meta[DAY.isoformat()]
    assert str(bad.trades) in meta[BAD_DAY.isoformat()]["skipped"].value
    evaluations = [e.event_specific_data for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"]
    assert {e.partition for e in evaluations} == {DAY.isoformat()} and all(e.passed for e in evaluations)

    start = day_start_ns(DAY)
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as con:
        summary = con.sql(
            "SELECT dt::VARCHAR, interval, bars, trades FROM main.ohlcv_bars_summary ORDER BY 2"
        ).fetchall()
        ours = con.sql(
            "SELECT epoch_ns(bar_start), open, high, low, close, volume, trade_count FROM bars.ohlcv "
            "WHERE interval = '1m' AND symbol = 'BTC-USDT' ORDER BY bar_start"
        ).fetchall()
        theirs = con.sql(
            f"""
            WITH t AS (
                SELECT make_timestamp(origin_time // 1000) AS ts, origin_time AS t, file_row_number AS r,
                       price::VARCHAR::DECIMAL(18,2) AS price, quantity::VARCHAR::DECIMAL(38,6) AS quantity
                FROM read_parquet('{files.trades}', file_row_number = true)
                WHERE origin_time >= {start} AND origin_time < {start + 86_400 * 10**9}
            )
            SELECT epoch_ns(time_bucket(INTERVAL 1 MINUTE, ts)) AS bar_start,
                   first(price ORDER BY t, r), max(price), min(price), last(price ORDER BY t, r),
                   sum(quantity), count(*)
            FROM t GROUP BY 1 ORDER BY 1
            """
        ).fetchall()
    assert [(day, name) for day, name, _, _ in summary] == [(DAY.isoformat(), n) for n in ("1h", "1m", "5m")]
    assert {trades for *_, trades in summary} == {497}
    assert len(ours) > 100 and ours == theirs
    # The run summary of `market-pipeline run` and `demo` shows them per day, instrument and interval.
    from market_pipeline.cli.report import bar_counts

    lines = bar_counts(settings.warehouse, DAY, BAD_DAY)
    assert lines[0].split() == ["dt", "instrument", "bars", "1m", "bars", "5m", "bars", "1h", "trades"]
    assert lines[2].split()[:2] == [DAY.isoformat(), INSTRUMENT] and lines[2].split()[-1] == "497"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("1m,7m", "'7m' does not divide a day"),
        ("1s", "'1s' is not a bar interval"),
        ("1d", "'1d' is not a bar interval"),
        ("0m", "'0m' does not divide a day"),
        ("60m,1h", "'1h' repeats the interval '60m'"),
        ("", "at least one bar interval"),
    ],
)
def test_bad_intervals_name_the_setting(monkeypatch, value, message):
    from market_pipeline.settings import SettingsError, load_settings

    monkeypatch.setenv("PIPELINE_BARS__INTERVALS", value)
    with pytest.raises(SettingsError) as caught:
        load_settings()
    (problem,) = caught.value.problems
    assert problem.startswith("PIPELINE_BARS__INTERVALS: ") and message in problem


def test_intervals_from_a_comma_or_json_list_are_canonical(monkeypatch):
    from market_pipeline.settings import load_settings

    monkeypatch.setenv("PIPELINE_BARS__INTERVALS", "1h, 5m,120m")
    assert load_settings().bars.intervals == ["5m", "1h", "2h"]
    monkeypatch.setenv("PIPELINE_BARS__INTERVALS", '["15m", "24h"]')
    assert [(i.name, i.bars_per_day) for i in load_settings().bars.bar_intervals] == [("15m", 96), ("24h", 1)]
    monkeypatch.delenv("PIPELINE_BARS__INTERVALS")
    assert load_settings().bars.intervals == ["1m"]  # config.yaml


def test_the_view_keeps_every_instruments_decimals_exact(tmp_path, monkeypatch):
    """`bars.ohlcv` over instruments of different lots and ticks equals each bars file exactly.

    DuckDB reads the first file's DECIMAL(38, s) for all files when two scales cannot widen within
    38 digits: with a 0.001-lot instrument read first, BTC-USDT's volume 0.344981 read 0.345.
    """
    import duckdb

    from market_pipeline.core.bars.build import build_bar_day
    from market_pipeline.core.lake.catalog import BARS_VIEWS, ensure_lake_views
    from market_pipeline.defs.bars.assets import BarFiles
    from market_pipeline.settings import load_settings

    coarse = "AAA:BTC-USDT-PERP"  # sorts before BINANCE: its file is the one DuckDB reads first
    monkeypatch.setenv("PIPELINE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("PIPELINE_INSTRUMENTS", f"{coarse},{INSTRUMENT}")
    monkeypatch.setenv("PIPELINE_INSTRUMENT_SPECS", json.dumps({coarse: {"tick_size": "0.1", "lot_size": "0.001"}}))
    settings = load_settings()
    expected = {}
    for seed, instrument in enumerate(settings.universe):
        files = BarFiles.of(settings, instrument, DAY)
        write_books(files.books, write_trades(files.trades, DAY, rows=400, seed=seed), DAY)
        build_bar_day(
            files.trades, files.books, files.bars, instrument, DAY, settings.bars.bar_intervals, tmp_path / "spill"
        )
        expected[instrument.symbol] = pq.read_table(files.bars).to_pylist()
    assert ensure_lake_views(settings.warehouse, settings.lake_dir, BARS_VIEWS) == ["bars.ohlcv"]

    columns = pq.read_schema(files.bars).names
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as con:
        for symbol, rows in expected.items():
            cursor = con.execute(
                f"SELECT {', '.join(columns)} FROM bars.ohlcv WHERE symbol = ? ORDER BY interval, bar_start", [symbol]
            )
            view = [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]
            rows = sorted(rows, key=lambda r: (r["interval"], r["bar_start"]))
            assert len(view) == len(rows) > 100
            assert view == rows
    assert any(r["volume"] != r["volume"].quantize(Decimal("0.001")) for r in expected["BTC-USDT"])

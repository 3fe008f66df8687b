"""Two sources, one truth (issue 25): a synthetic vendor day damaged on demand against a capture of
the same day written undamaged; `source_agreement` finds exactly the damage injected (counts and
hours), nothing on an undamaged day, records a day without a capture as such, and its checks fail
where they should.

One Dagster run over three days of BINANCE_FUTURES:BTC-USDT-PERP (scale 0.02): the first damaged
(dropped messages and trades, a delayed span, stale snapshots), the second clean, the third
without a capture.
"""

from __future__ import annotations

import datetime as dt
import json

import duckdb
import polars as pl
import pytest
from conftest import assets_named, code_location, range_tags

DAMAGED, CLEAN, UNCAPTURED = dt.date(2024, 3, 1), dt.date(2024, 3, 2), dt.date(2024, 3, 3)
KEY = "BINANCE_FUTURES:BTC-USDT-PERP"
FAULTS = {"dropped_messages": 3, "dropped_trades": 4, "clock_skew_episodes": 1, "stale_snapshots": 3}
ASSETS = ("raw_trades", "raw_book_snapshots", "raw_book_deltas", "reconstructed_books", "source_agreement")
NS_PER_HOUR = 3_600_000_000_000


def _hour(ns: int, day: dt.date) -> int:
    return (ns - int(dt.datetime.combine(day, dt.time(), dt.UTC).timestamp()) * 1_000_000_000) // NS_PER_HOUR


@pytest.fixture(scope="module")
def agreement_run(tmp_path_factory):
    import dagster as dg

    from market_pipeline.settings import load_settings
    from market_pipeline.vendors.synthetic.reference import write_reference_capture

    tmp = tmp_path_factory.mktemp("agreement")
    capture_dir = tmp / "captures"
    capture_dir.mkdir()
    mp = pytest.MonkeyPatch()
    env = {
        "PIPELINE_SOURCE": "synthetic",
        "PIPELINE_INSTRUMENTS": KEY,
        "PIPELINE_START_DATE": "2024-01-01",
        "PIPELINE_DATA_DIR": str(tmp / "data"),
        "PIPELINE_WORKERS": "1",
        "PIPELINE_SYNTHETIC__SEED": "7",
        "PIPELINE_SYNTHETIC__SCALE": "0.02",
        "PIPELINE_SYNTHETIC__FAULTS": json.dumps({**FAULTS, "days": [DAMAGED.isoformat()]}),
        "PIPELINE_CAPTURE_DIR": str(capture_dir),
        "PIPELINE_SOURCES": json.dumps({KEY: {"primary": "synthetic", "reference": "capture"}}),
        "DAGSTER_HOME": str(tmp / "dagster_home"),
    }
    (tmp / "dagster_home").mkdir()
    for name in [n for n in __import__("os").environ if n.startswith("PIPELINE_")]:
        mp.delenv(name)
    for name, value in env.items():
        mp.setenv(name, value)
    try:
        settings = load_settings()
        instrument = settings.universe[0]
        for day in (DAMAGED, CLEAN):  # the golden samples, written from the undamaged days
            write_reference_capture(settings.synthetic, instrument, day, tmp / "undamaged", capture_dir)
        defs = code_location(settings)
        checks = [c for c in defs.asset_checks or [] if "source_agreement" in str(list(c.check_keys)[0])]
        with dg.DagsterInstance.ephemeral() as instance:
            result = dg.materialize(
                [*assets_named(defs, *ASSETS), *checks],
                resources=defs.resources,
                tags=range_tags(DAMAGED.isoformat(), UNCAPTURED.isoformat()),
                instance=instance,
                raise_on_error=False,
            )
        with duckdb.connect(str(settings.warehouse_path), read_only=True) as con:
            daily = con.sql("SELECT * FROM main.source_agreement ORDER BY dt").pl()
            hourly = con.sql("SELECT * FROM main.source_agreement_hourly ORDER BY dt, hour").pl()
        truth_dir = settings.data_dir / "sources" / "synthetic" / "_ground_truth" / "synthetic"
        manifest_path = truth_dir / "exchange=BINANCE_FUTURES" / "symbol=BTC-USDT-PERP" / f"dt={DAMAGED}"
        manifest = json.loads((manifest_path / "manifest.json").read_text())
        yield result, daily, hourly, manifest["faults"], settings
    finally:
        mp.undo()


def _hours(hourly: pl.DataFrame, day: dt.date, column: str) -> dict[int, int]:
    rows = hourly.filter((pl.col("dt") == day) & (pl.col(column) > 0))
    return dict(zip(rows["hour"].to_list(), rows[column].to_list(), strict=True))


def _counts_by_hour(times: list[int], day: dt.date) -> dict[int, int]:
    counts: dict[int, int] = {}
    for t in times:
        counts[_hour(t, day)] = counts.get(_hour(t, day), 0) + 1
    return counts


def test_the_run_writes_one_row_per_instrument_day(agreement_run):
    result, daily, hourly, _, _ = agreement_run
    assert result.success
    assert daily["dt"].to_list() == [DAMAGED, CLEAN, UNCAPTURED]
    assert daily["status"].to_list() == ["compared", "compared", "no_reference_data"]
    assert daily["reference"].to_list() == ["capture"] * 3
    assert hourly.group_by("dt").len().sort("dt")["len"].to_list() == [24, 24]


def test_the_damage_is_found_exactly(agreement_run):
    _, daily, hourly, faults, settings = agreement_run
    day = daily.filter(pl.col("dt") == DAMAGED).row(0, named=True)
    dropped = faults["dropped_messages"]
    assert day["messages_missing"] == len(dropped) == FAULTS["dropped_messages"]
    assert _hours(hourly, DAMAGED, "messages_missing") == _counts_by_hour([r["origin_time"] for r in dropped], DAMAGED)
    assert day["messages_extra"] == 0
    trades = faults["dropped_trades"]
    assert day["trades_missing"] == len(trades) == FAULTS["dropped_trades"]
    assert _hours(hourly, DAMAGED, "trades_missing") == _counts_by_hour([r["origin_time"] for r in trades], DAMAGED)
    assert day["trades_extra"] == day["trades_price_differs"] == day["trades_size_differs"] == 0
    assert day["trades_side_differs"] == 0
    stale = faults["stale_snapshots"]
    assert day["snapshots_differing"] == len(stale) == FAULTS["stale_snapshots"]
    assert _hours(hourly, DAMAGED, "snapshots_differing") == _counts_by_hour([r["origin_time"] for r in stale], DAMAGED)

    # The delayed span: every message of the episode (by the vendor's own rows), by the skew.
    (episode,) = faults["clock_skew_episodes"]
    from market_pipeline.core.lake.paths import raw_partition_dir

    deltas = pl.read_parquet(
        raw_partition_dir(settings.lake_dir, "book_delta_v2", "BINANCE_FUTURES", "BTC-USDT-PERP", DAMAGED)
        / "data.parquet"
    )
    in_span = deltas.filter(
        (pl.col("origin_time") >= episode["start_origin_time"]) & (pl.col("origin_time") < episode["end_origin_time"])
    ).unique("sequence_number")
    assert day["delayed_messages"] == in_span.height > 0
    assert _hours(hourly, DAMAGED, "delayed_messages") == _counts_by_hour(in_span["origin_time"].to_list(), DAMAGED)
    # The vendor received them at exchange time + skew instead of + latency (the simulator's is < 90 ms).
    skew_ms = episode["skew_ns"] / 1e6
    assert skew_ms - 90 < day["delay_max_ms"] < skew_ms

    # The vendor's book disagrees with the capture only in damaged hours.
    damaged_hours = {
        _hour(t, DAMAGED)
        for t in [r["origin_time"] for r in dropped + stale]
        + [episode["start_origin_time"], episode["end_origin_time"]]
    }
    assert set(_hours(hourly, DAMAGED, "tickers_differing")) <= damaged_hours
    assert set(_hours(hourly, DAMAGED, "book_instants_differing")) <= damaged_hours
    assert day["tickers"] > 0 and day["book_instants"] > 0


def test_nothing_is_found_on_an_undamaged_day(agreement_run):
    _, daily, hourly, _, _ = agreement_run
    day = daily.filter(pl.col("dt") == CLEAN).row(0, named=True)
    for column in (
        "messages_missing",
        "messages_extra",
        "delayed_messages",
        "trades_missing",
        "trades_extra",
        "trades_price_differs",
        "trades_size_differs",
        "trades_side_differs",
        "tickers_differing",
        "snapshots_differing",
        "book_instants_differing",
        "hours_with_damage",
    ):
        assert day[column] == 0, column
    assert day["messages_reference"] == day["messages_vendor"] > 0
    assert day["trades_reference"] == day["trades_vendor"] > 0
    assert day["ticker_agreement_share"] == 1.0
    assert day["tickers_matched"] > 0.99 * day["tickers"]  # the rest: before the vendor's first snapshot
    assert day["delay_max_ms"] == 0.0


def test_the_checks_fail_where_they_should(agreement_run):
    result, _, _, _, _ = agreement_run
    verdicts = {
        (e.check_name, e.partition): e.passed
        for e in result.get_asset_check_evaluations()
        if e.asset_key.to_user_string() == "source_agreement"
    }
    assert verdicts[("trades_missing", DAMAGED.isoformat())] is False
    assert verdicts[("messages_missing", DAMAGED.isoformat())] is False
    assert verdicts[("ticker_agreement", DAMAGED.isoformat())] is True  # no differing ticker where in sync
    for day in (CLEAN, UNCAPTURED):  # clean, and nothing to compare
        for check in ("trades_missing", "messages_missing", "ticker_agreement"):
            assert verdicts[(check, day.isoformat())] is True, (check, day)


def test_the_report_and_the_run_summary_show_it(agreement_run):
    from market_pipeline.cli.agreement_summary import agreement_rows
    from market_pipeline.core.quality.agreement_report import agreement_report_path

    result, _, _, _, settings = agreement_run
    report = agreement_report_path(settings.data_dir.resolve(), DAMAGED)
    text = report.read_text()
    assert KEY in text and "reference trades the vendor lacks" in text
    meta = {
        m.partition: m.metadata
        for m in result.asset_materializations_for_node("source_agreement")
        if m.asset_key.to_user_string() == "source_agreement"
    }
    assert meta[DAMAGED.isoformat()]["report"].value == str(report)
    lines = agreement_rows(settings.warehouse, DAMAGED, UNCAPTURED)
    by_day = {line.split()[0]: line.split() for line in lines if line.split()[0][:4] == "2024"}
    assert sorted(by_day) == [DAMAGED.isoformat(), CLEAN.isoformat(), UNCAPTURED.isoformat()]
    damaged = by_day[DAMAGED.isoformat()]
    assert damaged[1:5] == [KEY, "compared", str(FAULTS["dropped_messages"]), str(FAULTS["dropped_trades"])]
    assert by_day[UNCAPTURED.isoformat()][2] == "no_reference_data"


def test_the_rows_do_not_depend_on_the_batch_size(agreement_run, tmp_path):
    """Each side is read in batches and spilled by hour: any batch size gives the same rows."""
    from market_pipeline.core.lake.paths import reference_lake_dir
    from market_pipeline.core.quality.agreement import compare_day
    from market_pipeline.defs.agreement.assets import agreement_inputs

    _, _, hourly, _, settings = agreement_run
    instrument = settings.universe[0]
    inputs = agreement_inputs(settings, reference_lake_dir(settings.lake_dir, "capture"), instrument, DAMAGED)
    small = compare_day(inputs, tmp_path / "small", 1_000, settings.agreement.top_levels)
    stored = hourly.filter(pl.col("dt") == DAMAGED).drop("dt", "instrument")
    assert small.equals(stored.select(small.columns))

"""validation_reports through Dagster on two small synthetic days (one clean, one with repairable faults).

The faulted day has only faults that fail non-blocking checks or fail blocking ones with WARN
(repaired gaps, float noise, one positive clock-skew episode), so the whole graph runs: this is
the demo's situation.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import re

import duckdb
import numpy as np
import polars as pl
import pytest

from market_pipeline_tests.support.dagster_instance import assets_named, code_location, range_tags
from market_pipeline_tests.support.quality_world import CLEAN, FAULTED, INSTRUMENT

pytestmark = pytest.mark.slow  # a module world: raw -> books -> validation over two days: not in `make test-quick`


def manifest(settings, day: dt.date) -> dict:
    path = (
        settings.data_dir
        / "sources"
        / "synthetic"
        / "_ground_truth"
        / "synthetic"
        / "exchange=BINANCE"
        / "symbol=BTC-USDT"
        / f"dt={day.isoformat()}"
        / "manifest.json"
    )
    return json.loads(path.read_text())


def table(settings, name: str) -> pl.DataFrame:
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as con:
        return con.execute(f"SELECT * FROM main.{name} ORDER BY ALL").pl()


def evaluations(result) -> dict[tuple[str, str, str | None], object]:
    found = {}
    for event in result.all_events:
        if event.event_type_value == "ASSET_CHECK_EVALUATION":
            e = event.event_specific_data
            found[(e.asset_key.to_user_string(), e.check_name, e.partition)] = e
    return found


def test_run_completes_despite_failed_non_blocking_and_warn_checks(world):
    result = world["result"]
    assert result.success
    evals = evaluations(result)
    skew = evals[("raw_book_deltas", "clock_skew", FAULTED.isoformat())]
    assert not skew.passed and skew.severity.value == "WARN"
    assert evals[("raw_book_deltas", "clock_skew", CLEAN.isoformat())].passed
    gaps = evals[("raw_book_deltas", "sequence_gaps", FAULTED.isoformat())]
    assert not gaps.passed and gaps.severity.value == "WARN"  # every gap repaired by a later snapshot
    precision = evals[("raw_book_deltas", "price_precision", FAULTED.isoformat())]
    assert not precision.passed and precision.severity.value == "WARN"  # float noise only
    for check in ("sequence_gaps", "price_precision", "schema_and_row_counts"):
        assert evals[("raw_book_deltas", check, CLEAN.isoformat())].passed
    for check in ("no_crossed_books", "vendor_snapshot_agreement", "book_in_sync"):
        assert evals[("reconstructed_books", check, CLEAN.isoformat())].passed
    assert evals[("reconstructed_books", "book_in_sync", FAULTED.isoformat())].passed  # repaired within 100 ms
    # validation_reports materialized both days.
    assert {e.partition for e in result.asset_materializations_for_node("validation_reports")} == {
        CLEAN.isoformat(),
        FAULTED.isoformat(),
    }


def test_daily_rows_match_manifest_and_rebuild(world):
    from market_pipeline.defs.common.recorded import rebuild_counters

    settings, instance = world["settings"], world["instance"]
    daily = table(settings, "validation_reports")
    assert daily.height == 2
    assert daily.select("dt", "exchange", "symbol").rows() == [
        (CLEAN, "BINANCE", "BTC-USDT"),
        (FAULTED, "BINANCE", "BTC-USDT"),
    ]
    clean, faulted = daily.row(0, named=True), daily.row(1, named=True)
    truth = manifest(settings, FAULTED)["faults"]

    assert clean["gaps_detected"] == clean["gaps_filled"] == 0
    assert clean["snapshot_exact_match_share"] == 1.0 and clean["max_mid_dev_ticks"] == 0
    assert clean["off_grid_values"] == clean["precision_loss_events"] == 0 and clean["price_decimals_max"] <= 2
    assert clean["skew_negative_share"] == 0 and clean["skew_max_ms"] < 500
    assert clean["crossed_events"] == 0 and clean["rebuilt_crossed_rows"] == 0
    assert 0.5 < clean["trades_at_or_inside_touch_share"] <= 1.0

    # A dropped message is one jump; a swapped pair is a jump (the later message first) plus an
    # out-of-order message.
    swaps = len(truth["out_of_order_rows"])
    assert faulted["sequence_jumps"] == len(truth["dropped_messages"]) + swaps
    assert faulted["out_of_order_messages"] == swaps
    assert faulted["missing_sequence_numbers"] == len(truth["dropped_messages"]) + swaps
    assert faulted["gaps_unrepaired"] == 0
    counters = rebuild_counters(instance, INSTRUMENT, FAULTED)
    assert faulted["gaps_detected"] == (
        counters["sequence_gaps"] + counters["out_of_order_messages"] + counters["divergences"]
    )
    assert faulted["gaps_filled"] == counters["fills"]
    for day, row in ((CLEAN, clean), (FAULTED, faulted)):  # the books file's rows, as the rebuild counted them
        day_counters = rebuild_counters(instance, INSTRUMENT, day)
        assert row["book_rows"] == day_counters["rows_written"] > 0
        assert row["unsynced_rows"] == day_counters["rows_written_unsynced"]
        assert row["unsynced_share"] == row["unsynced_rows"] / row["book_rows"]
        assert row["chain_breaks"] == 0  # not a capture
    assert faulted["snapshot_exact_match_share"] == pytest.approx(
        counters["vendor_snapshots_matched"] / counters["vendor_snapshots"]
    )
    # Every mismatched snapshot disagrees on at least one level, and a level at most once per snapshot.
    mismatched = counters["vendor_snapshots"] - counters["vendor_snapshots_matched"]
    assert mismatched > 0
    assert max(faulted["mismatches_by_level"]) <= mismatched <= sum(faulted["mismatches_by_level"])
    assert faulted["precision_loss_events"] == len(truth["float_noise_prices"])
    assert faulted["off_grid_values"] == 0
    assert faulted["price_decimals_max"] > 2
    (episode,) = truth["clock_skew_episodes"]
    assert faulted["skew_max_ms"] == pytest.approx(episode["skew_ns"] / 1e6)
    assert faulted["capture_ticker_agreement_share"] is None and faulted["ks_spread_pvalue"] is None


def test_hourly_rows(world):
    settings = world["settings"]
    hourly = table(settings, "validation_reports_hourly")
    daily = table(settings, "validation_reports")
    assert hourly.height == 48
    assert hourly["hour"].min() == dt.datetime(2024, 3, 1, 0) and hourly["hour"].max() == dt.datetime(2024, 3, 2, 23)
    sums = (
        hourly.group_by("dt").agg(pl.col("gaps_detected", "gaps_filled", "book_rows", "unsynced_rows").sum()).sort("dt")
    )
    assert sums["book_rows"].to_list() == daily["book_rows"].to_list()
    assert sums["unsynced_rows"].to_list() == daily["unsynced_rows"].to_list()
    assert sums["gaps_detected"].to_list() == daily["gaps_detected"].to_list()
    assert sums["gaps_filled"].to_list() == daily["gaps_filled"].to_list()
    (episode,) = manifest(settings, FAULTED)["faults"]["clock_skew_episodes"]
    start = dt.datetime.fromtimestamp(episode["start_origin_time"] / 1e9, dt.UTC).replace(
        minute=0, second=0, microsecond=0, tzinfo=None
    )
    in_hour = hourly.filter(pl.col("hour") == start).row(0, named=True)
    assert in_hour["skew_max_ms"] == pytest.approx(episode["skew_ns"] / 1e6)


def test_report_written_and_linked(world):
    from market_pipeline.core.quality.report import report_path

    settings, instance = world["settings"], world["instance"]
    path = report_path(settings.data_dir.resolve(), FAULTED)
    text = path.read_text()
    assert "<svg" in text and INSTRUMENT in text and "gaps detected" in text
    import dagster as dg

    # The report opens with a verdict per check of the day, as the run evaluated them.
    evaluations = {
        (e.asset_key.to_user_string(), e.check_name): "passed" if e.passed else e.severity.value
        for e in (
            entry.asset_check_evaluation
            for entry in instance.all_logs(world["result"].run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION)
        )
        if e is not None and e.partition == FAULTED.isoformat()
    }
    assert evaluations and "WARN" in evaluations.values()  # the faulted day fails a check or more
    verdicts = {
        (asset, check): verdict
        for asset, check, verdict in re.findall(
            r"<tr><td>([^<]+)</td><td>([^<]+)</td><td style=[^>]*>([^<]+)</td>", text
        )
    }
    assert verdicts == evaluations
    assert text.index("<h2>Checks</h2>") < text.index(f"<h2>{INSTRUMENT}</h2>")
    # The plots label their real ranges: the hours of the day across, 0 to the largest value up.
    skew_chart = text[text.index("clock skew p99 per hour") :].split("</svg>")[0]
    assert "00:00" in skew_chart and "24:00" in skew_chart and ">0</text>" in skew_chart
    top = max(float(v) for v in re.findall(r"UTC: ([\d.e+-]+) ms</title>", skew_chart))
    assert f">{top:.4g} ms</text>" in skew_chart

    record = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("validation_reports"), asset_partitions=[FAULTED.isoformat()]),
        limit=1,
    ).records[0]
    meta = record.asset_materialization.metadata
    assert meta["report"].value == str(path)
    assert meta["gaps_detected"].value > 0


def test_rematerializing_a_range_replaces_rows(world_env):
    import dagster as dg

    world = world_env
    settings = world["settings"]
    defs = code_location(settings)
    before = table(settings, "validation_reports")
    result = dg.materialize(
        assets_named(defs, "validation_reports"),
        instance=world["instance"],
        resources=defs.resources,
        tags=range_tags(CLEAN.isoformat(), FAULTED.isoformat()),
    )
    assert result.success
    after = table(settings, "validation_reports")
    assert after.height == 2 and table(settings, "validation_reports_hourly").height == 48
    assert after.drop("levels_mismatched_mean").equals(before.drop("levels_mismatched_mean"))


def test_ks_matches_brute_force_enumeration():
    from market_pipeline.core.quality.ks import ks_2samp

    assert ks_2samp([1, 2, 3], [4, 5, 6]).pvalue == pytest.approx(0.1)
    x, y = [0.1, 0.5, 0.9, 1.3], [0.2, 0.3, 1.6, 1.7, 2.0, 2.1]
    observed = ks_2samp(x, y)
    pooled = sorted(x + y)
    hits = total = 0
    for picked in itertools.combinations(range(len(pooled)), len(y)):
        ys = [pooled[i] for i in picked]
        xs = [pooled[i] for i in range(len(pooled)) if i not in picked]
        total += 1
        hits += ks_2samp(xs, ys).statistic >= observed.statistic - 1e-12
    assert observed.pvalue == pytest.approx(hits / total)


def test_ks_exact_and_asymptotic_agree_on_large_samples(monkeypatch):
    from market_pipeline.core.quality import ks

    rng = np.random.default_rng(7)
    a, b = rng.normal(size=300), rng.normal(0.1, 1, size=400)
    exact = ks.ks_2samp(a, b)
    monkeypatch.setattr(ks, "EXACT_MAX_SHORTER", 0)
    asymptotic = ks.ks_2samp(a, b)
    assert exact.method == "exact" and asymptotic.method == "asymptotic"
    assert exact.statistic == asymptotic.statistic
    assert asymptotic.pvalue == pytest.approx(exact.pvalue, abs=0.02)  # O(1/sqrt(n)) approximation
    with pytest.raises(ValueError, match="non-empty"):
        ks.ks_2samp([], [1.0])

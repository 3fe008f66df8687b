"""Asset checks: per-day evaluations in one range run, severities against the synthetic fault manifest,
and a blocking failure stopping downstream assets for the whole run."""

from __future__ import annotations

import datetime as dt
import json
from types import SimpleNamespace

import polars as pl
import pytest

from market_pipeline_tests.support.dagster_instance import assets_named, code_location, range_tags

pytestmark = pytest.mark.slow  # a module world: raw and books with their checks over two days: not in `make test-quick`

CLEAN, FAULTED = dt.date(2024, 3, 1), dt.date(2024, 3, 2)
INSTRUMENT = "BINANCE:BTC-USDT"
ENV = {
    "PIPELINE_INSTRUMENTS": INSTRUMENT,
    "PIPELINE_START_DATE": "2024-01-01",
    "PIPELINE_SYNTHETIC__SCALE": "0.02",
    "PIPELINE_SYNTHETIC__FAULTS__DROPPED_MESSAGES": "2",
    "PIPELINE_SYNTHETIC__FAULTS__OFF_GRID_PRICES": "2",
    "PIPELINE_SYNTHETIC__FAULTS__CLOCK_SKEW_EPISODES": "2",  # the second one is negative
    "PIPELINE_SYNTHETIC__FAULTS__DAYS": json.dumps([FAULTED.isoformat()]),
}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    import dagster as dg

    from market_pipeline.settings import load_settings

    mp = pytest.MonkeyPatch()
    root = tmp_path_factory.mktemp("checks")
    (root / "dh").mkdir()
    env = {**ENV, "PIPELINE_DATA_DIR": str(root / "data"), "DAGSTER_HOME": str(root / "dh")}
    for name, value in env.items():
        mp.setenv(name, value)
    instance = dg.DagsterInstance.get()
    settings = load_settings()
    defs = code_location(settings)
    names = {"sequence_gaps", "clock_skew", "price_precision", "schema_and_row_counts"}
    assets = {"raw_book_snapshots", "raw_book_deltas"}
    checks = [
        c
        for c in defs.asset_checks
        if any(key.name in names and key.asset_key.to_user_string() in assets for key in c.check_keys)
    ]
    result = dg.materialize(
        [*assets_named(defs, "raw_book_snapshots", "raw_book_deltas", "reconstructed_books"), *checks],
        instance=instance,
        resources=defs.resources,
        tags=range_tags(CLEAN.isoformat(), FAULTED.isoformat()),
        raise_on_error=False,
    )
    yield SimpleNamespace(instance=instance, result=result, settings=settings, env=env)
    instance.dispose()
    mp.undo()


@pytest.fixture
def world_env(world, monkeypatch):
    for name, value in world.env.items():
        monkeypatch.setenv(name, value)
    return world


def faults(settings) -> dict:
    path = (
        settings.data_dir
        / "sources"
        / "synthetic"
        / "_ground_truth"
        / "synthetic"
        / "exchange=BINANCE"
        / "symbol=BTC-USDT"
        / f"dt={FAULTED.isoformat()}"
        / "manifest.json"
    )
    return json.loads(path.read_text())["faults"]


def evaluation(result, check: str, day: dt.date, asset: str = "raw_book_deltas"):
    """The day's evaluation of `check` on `asset` (raw_book_snapshots has checks of the same names)."""
    for event in result.all_events:
        if event.event_type_value == "ASSET_CHECK_EVALUATION":
            e = event.event_specific_data
            if e.check_name == check and e.partition == day.isoformat() and e.asset_key.to_user_string() == asset:
                return e
    raise AssertionError(f"no evaluation of {check} on {asset} for {day}")


def meta(e, name: str):
    return e.metadata[f"{INSTRUMENT} {name}"].value


def test_each_day_is_evaluated_on_its_own(world):
    for check in ("sequence_gaps", "clock_skew", "price_precision", "schema_and_row_counts"):
        clean = evaluation(world.result, check, CLEAN)
        assert clean.passed, (check, clean.description)
        assert clean.blocking == (check != "clock_skew")


def test_each_days_evaluation_targets_that_days_materialization(world):
    """What the UI's check Partitions tab needs to show a day as Passed or Failed, not Missing."""
    import dagster as dg

    for day in (CLEAN, FAULTED):
        (record,) = world.instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey("raw_book_deltas"), asset_partitions=[day.isoformat()]),
            limit=1,
        ).records
        for check in ("sequence_gaps", "clock_skew", "price_precision", "schema_and_row_counts"):
            target = evaluation(world.result, check, day).target_materialization_data
            assert (target.storage_id, target.run_id) == (record.storage_id, world.result.run_id)


def test_off_grid_prices_fail_price_precision_with_error(world):
    e = evaluation(world.result, "price_precision", FAULTED)
    truth = faults(world.settings)["off_grid_prices"]
    assert not e.passed and e.severity.value == "ERROR"
    assert meta(e, "off_grid_values") == len(truth)
    rows = meta(e, "worst_rows")
    assert {r["sequence_number"] for r in rows} == {t["sequence_number"] for t in truth}
    assert all(r["problem"] == "off_grid" and r["received_time"] for r in rows)


def test_repaired_gaps_warn_and_negative_skew_errors(world):
    truth = faults(world.settings)
    gaps = evaluation(world.result, "sequence_gaps", FAULTED)
    assert not gaps.passed and gaps.severity.value == "WARN"
    assert meta(gaps, "sequence_jumps") == len(truth["dropped_messages"])
    assert meta(gaps, "gaps_unrepaired") == 0
    assert {r["sequence_number"] - 1 for r in meta(gaps, "worst_rows")} == {
        d["sequence_number"] for d in truth["dropped_messages"]
    }
    skew = evaluation(world.result, "clock_skew", FAULTED)
    assert not skew.passed and skew.severity.value == "ERROR"
    negative = min(e["skew_ns"] for e in truth["clock_skew_episodes"]) / 1e6
    assert meta(skew, "skew_min_ms") == pytest.approx(negative)
    assert meta(skew, "worst_rows")[0]["sequence_number"] > 0


def test_failed_blocking_check_skips_downstream_for_that_day_only(world):
    # One bad day does not stop the others: the step succeeds, the faulted day is recorded as
    # skipped with the check's reason and the clean day is rebuilt.
    assert world.result.success
    books = {m.partition: m.metadata for m in world.result.asset_materializations_for_node("reconstructed_books")}
    assert "skipped" in books[FAULTED.isoformat()]
    assert "skipped" not in books[CLEAN.isoformat()]
    assert any(key.endswith(" deltas_applied") for key in books[CLEAN.isoformat()])
    assert {m.partition for m in world.result.asset_materializations_for_node("raw_book_deltas")} == {
        CLEAN.isoformat(),
        FAULTED.isoformat(),
    }


def test_unrepaired_gap_is_an_error(world_env):
    from market_pipeline.defs.common.checks import day_files
    from market_pipeline.defs.raw.checks import sequence_gaps

    settings = world_env.settings
    files = day_files(settings, settings.universe[0], FAULTED)
    snapshots = pl.read_parquet(files.snapshots)
    first_gap = min(d["sequence_number"] for d in faults(settings)["dropped_messages"])
    try:
        # The vendor's snapshots stop before the first gap: nothing can repair either gap.
        snapshots.filter(pl.col("sequence_number") < first_gap).write_parquet(files.snapshots)
        finding = sequence_gaps.evaluate(None, settings, settings.universe[0], FAULTED)
    finally:
        snapshots.write_parquet(files.snapshots)
    assert finding.severity.value == "ERROR"
    assert finding.figures["gaps_unrepaired"] == 2
    assert finding.worst_rows[0]["repaired_by_snapshot_at"] is None


def test_book_checks_pass_on_a_clean_rebuilt_day(world_env):
    from market_pipeline.defs.books.assets import rebuild_instrument_day
    from market_pipeline.defs.books.checks import no_crossed_books, vendor_snapshot_agreement
    from market_pipeline.vendors.registry import build_source

    settings = world_env.settings
    instrument = settings.universe[0]
    rebuild_instrument_day(build_source(settings), settings, instrument, CLEAN)
    context = SimpleNamespace(instance=world_env.instance)
    crossed = no_crossed_books.evaluate(context, settings, instrument, CLEAN)
    assert crossed.severity is None and crossed.figures["rebuilt_crossed_rows"] == 0
    agreement = vendor_snapshot_agreement.evaluate(context, settings, instrument, CLEAN)
    assert agreement.severity is None and agreement.figures["snapshot_exact_match_share"] == 1.0


def test_freshness(world):
    import dagster as dg

    from market_pipeline.defs.automation.freshness import freshness_result, newest_due_day

    now = dt.datetime(2024, 3, 4, 5, 0, tzinfo=dt.UTC)
    assert newest_due_day(now, 30) == dt.date(2024, 3, 1)  # 3-02 is due at 3-04 06:00
    assert newest_due_day(now + dt.timedelta(hours=1), 30) == dt.date(2024, 3, 2)
    key = dg.AssetKey("raw_book_deltas")
    fresh = freshness_result(world.instance, key, now, 30, dt.date(2024, 1, 1))
    assert fresh.passed
    stale = freshness_result(world.instance, key, now + dt.timedelta(hours=25), 30, dt.date(2024, 1, 1))
    assert not stale.passed and stale.severity.value == "WARN"
    missing = stale.metadata["missing_recent_partitions"].value
    assert missing[0] == "2024-03-03" and "2024-02-29" in missing
    assert "2024-03-01" not in missing and "2024-03-02" not in missing

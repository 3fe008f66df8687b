"""A real Binance capture with one depth diff removed: the broken chain and the span the book was
out of sync reach validation_reports, its hourly rows, the checks and the HTML report (issue 24, item 1)."""

from __future__ import annotations

import datetime as dt
import gzip

import duckdb
import pytest

from market_pipeline_tests.support.binance_capture import REAL_DIR, USDM
from market_pipeline_tests.support.dagster_instance import assets_named, code_location, range_tags

KEY = "BINANCE_FUTURES:BTC-USDT-PERP"
DAY = dt.date(2024, 8, 8)


@pytest.fixture(scope="module")
def broken_capture(tmp_path_factory):
    """The USD-M capture with its middle depth diff left out; (run result, settings, removed line)."""
    import dagster as dg

    from market_pipeline.settings import load_settings

    source = REAL_DIR / USDM[0]
    if not source.is_file():
        pytest.skip(f"third-party Binance capture not available: {source}")
    lines = gzip.decompress(source.read_bytes()).splitlines(keepends=True)
    diffs = [i for i, line in enumerate(lines) if b"@depth" in line]
    removed = diffs[len(diffs) // 2]
    root = tmp_path_factory.mktemp("capture_gap")
    captures = root / "captures"
    captures.mkdir()
    (captures / source.name).write_bytes(gzip.compress(b"".join(lines[:removed] + lines[removed + 1 :])))
    (root / "dh").mkdir()
    mp = pytest.MonkeyPatch()
    env = {
        "PIPELINE_SOURCE": "capture",
        "PIPELINE_CAPTURE_DIR": str(captures),
        "PIPELINE_INSTRUMENTS": KEY,
        "PIPELINE_START_DATE": "2024-08-01",
        "PIPELINE_DATA_DIR": str(root / "data"),
        "DAGSTER_HOME": str(root / "dh"),
    }
    for name, value in env.items():
        mp.setenv(name, value)
    instance = dg.DagsterInstance.get()
    settings = load_settings()
    defs = code_location(settings)
    raw = ("raw_trades", "raw_book_snapshots", "raw_book_deltas", "raw_book_ticker", "raw_depth_snapshots")
    checks = [c for c in defs.asset_checks if all(key.name != "freshness" for key in c.check_keys)]
    result = dg.materialize(
        [*assets_named(defs, *raw, "reconstructed_books", "validation_reports"), *checks],
        instance=instance,
        resources=defs.resources,
        tags=range_tags(DAY.isoformat(), DAY.isoformat()),
        raise_on_error=False,
    )
    yield result, settings, int(lines[removed].split(b" ", 1)[0])
    instance.dispose()
    mp.undo()


def _evaluation(result, check: str):
    (found,) = [
        e.event_specific_data
        for e in result.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION" and e.event_specific_data.check_name == check
    ]
    return found


def test_the_gap_and_the_unsynced_span_reach_the_report_the_hourly_rows_and_the_checks(broken_capture):
    result, settings, removed_at = broken_capture
    assert result.success
    books = {m.partition: m.metadata for m in result.asset_materializations_for_node("reconstructed_books")}
    counters = books[DAY.isoformat()][f"{KEY} detail"].value["counters"]
    assert counters["gaps"] == 1 and counters["resyncs"] == 0  # no REST snapshot after the break

    with duckdb.connect(str(settings.warehouse_path), read_only=True) as con:
        daily = con.execute("SELECT * FROM main.validation_reports").pl().row(0, named=True)
        hourly = con.execute("SELECT * FROM main.validation_reports_hourly ORDER BY hour").pl()
    assert (daily["chain_breaks"], daily["gaps_detected"], daily["gaps_filled"], daily["gaps_unrepaired"]) == (
        1,
        1,
        0,
        1,
    )
    assert daily["book_rows"] == counters["rows_written"]
    assert daily["unsynced_rows"] == counters["rows_written_unsynced"]
    assert daily["unsynced_share"] > 0.3  # from the middle of the capture to its end
    gap_hour = dt.datetime.fromtimestamp(removed_at / 1e9, dt.UTC).replace(minute=0, second=0, microsecond=0)
    by_hour = {r["hour"]: r for r in hourly.iter_rows(named=True)}
    assert by_hour[gap_hour.replace(tzinfo=None)]["gaps_detected"] == 1
    assert hourly["gaps_detected"].sum() == 1
    assert hourly["unsynced_rows"].sum() == daily["unsynced_rows"]

    gaps = _evaluation(result, "sequence_gaps")  # warns: blocking it would leave no books to measure the span
    assert not gaps.passed and gaps.severity.value == "WARN" and "chain" in gaps.description
    in_sync = _evaluation(result, "book_in_sync")
    assert not in_sync.passed and in_sync.severity.value == "ERROR"
    assert in_sync.metadata[f"{KEY} unsynced_rows"].value == daily["unsynced_rows"]

    report = (settings.data_dir / "reports" / f"dt={DAY.isoformat()}" / "validation.html").read_text()
    assert "capture chain breaks</th><td>1<" in report and "share of book rows out of sync" in report
    assert "book_in_sync" in report


def test_the_import_keeps_the_chain_break_in_the_day_statistics(broken_capture):
    """The checks and validation_reports take the break from the day statistics, which the import
    gathered in its one pass: the same break a pass over the lake file finds."""
    from market_pipeline.core.lake.batches import iter_frames
    from market_pipeline.core.lake.paths import PARTITION_FILE, raw_partition_dir, stats_partition_dir
    from market_pipeline.core.quality.chain import CHAIN_COLUMNS, chain_breaks
    from market_pipeline.core.quality.day_stats import DayStats

    _, settings, removed_at = broken_capture
    exchange, symbol = KEY.split(":")
    stored = DayStats.read(stats_partition_dir(settings.lake_dir, "book_delta_v2", exchange, symbol, DAY))
    deltas = raw_partition_dir(settings.lake_dir, "book_delta_v2", exchange, symbol, DAY) / PARTITION_FILE
    assert stored is not None and stored.chain_breaks.height == 1
    assert stored.chain_breaks["received_time"][0] > removed_at
    assert stored.chain_breaks.equals(chain_breaks(iter_frames(deltas, CHAIN_COLUMNS)))

"""PIPELINE_SOURCE=capture: the capture source (cache, quarantine, days) and Binance-rules books."""

from __future__ import annotations

import datetime as dt
import json
import os

import polars as pl
import pyarrow.parquet as pq
import pytest

from market_pipeline.core.lake.paths import PARTITION_FILE, books_partition_dir, books_shape_path, raw_partition_dir
from market_pipeline.core.quality.book_shape import read_shape
from market_pipeline.core.quality.microstructure import _snapshot_shape
from market_pipeline_tests.support.binance_capture import REAL_DIR, SPOT, TRADE, USDM
from market_pipeline_tests.support.binance_capture import diff as _diff
from market_pipeline_tests.support.binance_capture import snapshot as _snapshot
from market_pipeline_tests.support.capture_source import (
    CONTINUOUS_DAY2,
    DAY1,
    DAY2,
    DAY2_EVENT_MS,
    MIDNIGHT_NS,
    SPOT_KEY,
    USDM_KEY,
    write_capture,
)
from market_pipeline_tests.support.capture_source import current_settings as _settings
from market_pipeline_tests.support.capture_source import import_and_rebuild as _import_and_rebuild
from market_pipeline_tests.support.capture_source import instrument_of as _instrument

BROKEN_DAY2 = [
    _diff(107, 107, bids=[("10.60", "1")], event_ms=DAY2_EVENT_MS),  # U != 105: the chain breaks at midnight
    _snapshot(107, bids=[["10.00", "1"]], asks=[["11.00", "2"]]),
    _diff(108, 108, asks=[("11.00", "3")], event_ms=DAY2_EVENT_MS),
]


@pytest.fixture
def capture_env(monkeypatch, data_dir, tmp_path):
    """Settings for the capture source over tmp_path/captures, one row per diff."""
    captures = tmp_path / "captures"
    captures.mkdir()
    monkeypatch.setenv("PIPELINE_SOURCE", "capture")
    monkeypatch.setenv("PIPELINE_CAPTURE_DIR", str(captures))
    monkeypatch.setenv("PIPELINE_INSTRUMENTS", f"{SPOT_KEY},{USDM_KEY}")
    monkeypatch.setenv("PIPELINE_BOOK__SAMPLE_INTERVAL_MS", "0")
    return captures


# --- the source ------------------------------------------------------------------------------


def test_source_serves_days_and_reparses_only_changed_captures(capture_env, monkeypatch, progress_tasks):
    from market_pipeline.vendors.base import DayNotCovered
    from market_pipeline.vendors.binance import source as capture_source
    from market_pipeline.vendors.registry import build_source

    write_capture(capture_env, CONTINUOUS_DAY2)
    parsed: list[str] = []
    real_parse = capture_source.parse_file
    monkeypatch.setattr(
        capture_source, "parse_file", lambda path, scratch: parsed.append(path.name) or real_parse(path, scratch)
    )
    settings = _settings()
    spot, usdm = _instrument(settings, SPOT_KEY), _instrument(settings, USDM_KEY)

    source = build_source(settings)
    assert source.available_days("book_delta_v2", spot) == [DAY1, DAY2]
    reading = f"reading the Binance captures in {capture_env}"
    assert progress_tasks == [(reading, False), (reading, True)]  # the CLI says what the step waits for
    assert source.available_days("book_delta_v2", usdm) == []
    deltas = pl.read_parquet(source.fetch("book_delta_v2", spot, DAY2))
    assert deltas.get_column("first_update_id").to_list() == [105, 108, 110, 112]
    assert deltas.get_column("prev_update_id").null_count() == deltas.height  # spot has no pu
    # One running line order over both files: day 2 continues after day 1's lines.
    assert (
        deltas.get_column("line_no").min()
        > pl.read_parquet(source.fetch("book_delta_v2", spot, DAY1)).get_column("line_no").max()
    )
    assert pl.read_parquet(source.fetch("depth_snapshot", spot, DAY1)).height == 2
    assert pl.read_parquet(source.fetch("trades", spot, DAY1)).height == 1
    assert pl.read_parquet(source.fetch("trades", spot, DAY2)).height == 0  # covered, no trade
    with pytest.raises(DayNotCovered, match="BINANCE_FUTURES:BTC-USDT-PERP on 2023-11-14"):
        source.fetch("trades", usdm, DAY1)
    with pytest.raises(DayNotCovered):
        source.fetch("trades", spot, dt.date(2023, 11, 16))
    assert sorted(parsed) == ["binance_spot_btcusdt_20231114.txt", "binance_spot_btcusdt_20231115.txt"]

    build_source(settings).fetch("trades", spot, DAY1)  # a new process: the cache is reused
    assert len(parsed) == 2
    day2 = capture_env / "binance_spot_btcusdt_20231115.txt"
    with day2.open("a") as fh:
        fh.write(f"{MIDNIGHT_NS + 5000} {TRADE}\n")
    os.utime(day2, ns=(day2.stat().st_atime_ns, day2.stat().st_mtime_ns + 10**9))
    assert pl.read_parquet(build_source(settings).fetch("trades", spot, DAY2)).height == 1
    assert len(parsed) == 4  # a changed capture rebuilds the cache


def test_corrupt_capture_is_quarantined_and_the_rest_still_served(capture_env, data_dir):
    from market_pipeline.vendors.capture_source import CaptureRejected
    from market_pipeline.vendors.registry import build_source

    write_capture(capture_env, CONTINUOUS_DAY2)
    bad = capture_env / "binance_usdm_btcusdt_20231114.txt"
    bad.write_text(f"{MIDNIGHT_NS - 10} {TRADE}\n{MIDNIGHT_NS - 5} {{not json\n")
    settings = _settings()
    spot, usdm = _instrument(settings, SPOT_KEY), _instrument(settings, USDM_KEY)
    source = build_source(settings)

    assert source.fetch("book_delta_v2", spot, DAY1)  # other instruments are unaffected
    with pytest.raises(CaptureRejected) as caught:
        source.fetch("book_delta_v2", usdm, DAY1)
    assert f"{bad}:2:" in str(caught.value)
    assert source.available_days("trades", usdm) == [DAY1]  # a run of it fails, naming the file
    copy = data_dir / "lake" / "quarantine" / "capture" / bad.name
    assert copy.read_bytes() == bad.read_bytes()
    reason = json.loads(copy.with_name(copy.name + ".reason.json").read_text())
    assert reason["path"] == str(bad)
    assert reason["instrument"] == USDM_KEY and reason["days"] == [DAY1.isoformat()]
    assert "Expecting" in reason["reason"]


# --- Binance-rules books across midnight -----------------------------------------------------


def _books(settings, instrument, day) -> pl.DataFrame:
    path = books_partition_dir(settings.lake_dir, instrument.exchange, instrument.symbol, day) / PARTITION_FILE
    return pl.read_parquet(path)


def test_day_two_continues_from_the_checkpoint_and_a_gap_unsyncs_until_the_resync(capture_env):
    write_capture(capture_env, CONTINUOUS_DAY2)
    settings = _settings()
    spot = _instrument(settings, SPOT_KEY)
    first = _import_and_rebuild(settings, spot, DAY1)
    c = first.counters
    assert (c["diffs"], c["skipped_before_sync"], c["applied"], c["gaps"]) == (3, 1, 2, 0)
    assert first.in_sync_at_end and first.start_mode == "waiting_for_snapshot"
    assert (first.final_best_bid, first.final_best_ask) == ("10.5", "11.5")
    assert first.trades == 1

    second = _import_and_rebuild(settings, spot, DAY2)
    c = second.counters
    assert second.start_mode == "previous_day_checkpoint" and second.continuous_at_start is True
    assert (c["diffs"], c["applied"], c["gaps"], c["resyncs"], c["dropped_after_gap"]) == (4, 3, 1, 1, 1)
    # The day-1 ticker for u=105 is checked against the first diff after midnight.
    assert (c["ticker_checks"], c["ticker_mismatches"]) == (1, 0)
    assert (second.final_best_bid, second.final_best_ask) == ("10.8", "11")

    books = _books(settings, spot, DAY2)
    # One row per diff line and one at the snapshot, in line order; never synced in the gap.
    assert books.get_column("trigger").to_list() == ["message"] * 3 + ["snapshot", "message"]
    assert books.get_column("synced").to_list() == [True, False, False, True, True]
    assert books.get_column("sequence_number").to_list() == [105, 105, 105, 111, 112]
    # The snapshot row waits (FIRST state) only when no buffered diff brackets it: here one does.
    top = books.row(0, named=True)
    assert (str(top["bid_0_price"]), str(top["bid_1_price"]), str(top["ask_0_price"])) == ("10.60", "10.50", "11.50")
    # Written in the lake rebuild's encoding (docs/data-formats.md): INT64 decimals, delta-packed.
    path = books_partition_dir(settings.lake_dir, spot.exchange, spot.symbol, DAY2) / PARTITION_FILE
    chunk = pq.ParquetFile(path).metadata.row_group(0)
    price = next(chunk.column(i) for i in range(chunk.num_columns) if chunk.column(i).path_in_schema == "bid_0_price")
    assert price.physical_type == "INT64" and "DELTA_BINARY_PACKED" in price.encodings
    assert price.compression == "UNCOMPRESSED"
    # Beside them, the shape of the snapshot row (what pipeline_metrics reads), as the metrics compute
    # it from the books themselves (whose absent levels are nulls here).
    shape = read_shape(books_shape_path(settings.lake_dir, spot.exchange, spot.symbol, DAY2), path)
    assert shape.to_pylist() == [{"hour": 0, "spread_ticks": 20, **dict.fromkeys(shape.column_names[2:], 0)}]
    assert shape.equals(_snapshot_shape(path, spot.tick_size, spot.lot_size, DAY2))


def test_day_two_waits_for_a_snapshot_when_the_chain_breaks_at_midnight(capture_env):
    write_capture(capture_env, BROKEN_DAY2)
    settings = _settings()
    spot = _instrument(settings, SPOT_KEY)
    _import_and_rebuild(settings, spot, DAY1)
    second = _import_and_rebuild(settings, spot, DAY2)
    assert second.continuous_at_start is False
    assert (second.counters["gaps"], second.counters["applied"], second.counters["resyncs"]) == (1, 1, 1)
    assert _books(settings, spot, DAY2).get_column("synced").to_list() == [False, False, True]


# --- tables a source does not provide --------------------------------------------------------


def test_capture_only_tables_are_not_provided_by_other_sources(monkeypatch, data_dir, instance):
    import dagster as dg

    from market_pipeline_tests.support.dagster_instance import assets_named, code_location

    monkeypatch.setenv("PIPELINE_SOURCE", "synthetic")
    defs = code_location()
    result = dg.materialize(
        assets_named(defs, "raw_book_ticker"), instance=instance, resources=defs.resources, partition_key="2024-03-01"
    )
    assert result.success
    (materialization,) = result.asset_materializations_for_node("raw_book_ticker")
    assert materialization.metadata["provided"].value is False
    assert materialization.metadata["rows"].value == 0
    assert not (data_dir / "lake" / "raw" / "book_ticker").exists()


# --- the real captures through the asset graph ----------------------------------------------


@pytest.fixture
def real_capture_source(monkeypatch):
    """PIPELINE_SOURCE=capture over the shared real captures (spot and USD-M, 2024-08-08..09)."""
    for name in (*USDM, *SPOT):
        if not (REAL_DIR / name).is_file():
            pytest.skip(f"third-party Binance captures not available in {REAL_DIR}: {name}")
    monkeypatch.setenv("PIPELINE_SOURCE", "capture")
    monkeypatch.setenv("PIPELINE_CAPTURE_DIR", str(REAL_DIR))
    monkeypatch.setenv("PIPELINE_INSTRUMENTS", f"{SPOT_KEY},{USDM_KEY}")
    monkeypatch.setenv("PIPELINE_START_DATE", "2024-08-08")
    # The real captures go through the graph as production rebuilds them: a book row every 100 ms,
    # not the tests' row a minute (the first rows, before the sync, are among what is asserted).
    monkeypatch.delenv("PIPELINE_BOOK__SAMPLE_INTERVAL_MS")


def test_real_captures_through_the_asset_graph_reproduce_the_reference_replay(
    real_capture_source, data_dir, instance, range_tags
):
    import dagster as dg

    from market_pipeline.core.book.rebuild import Grid, output_schema
    from market_pipeline_tests.support.dagster_instance import assets_named, code_location

    defs = code_location()
    raw = ("raw_trades", "raw_book_snapshots", "raw_book_deltas", "raw_book_ticker", "raw_depth_snapshots")
    result = dg.materialize(
        assets_named(defs, *raw, "reconstructed_books"),
        instance=instance,
        resources=defs.resources,
        tags=range_tags("2024-08-08", "2024-08-09"),
    )
    assert result.success

    def metadata(asset: str) -> dict[str, dict]:
        return {m.partition: m.metadata for m in result.asset_materializations_for_node(asset)}

    books, raw_deltas = metadata("reconstructed_books"), metadata("raw_book_deltas")
    assert sorted(books) == ["2024-08-08", "2024-08-09"]
    assert metadata("raw_book_ticker")["2024-08-08"]["rows"].value > 0
    assert metadata("raw_depth_snapshots")["2024-08-08"]["rows"].value == 4000  # two snapshots, 1000 a side
    # The futures capture ends before midnight: recorded as missing on 08-09, not a failure.
    assert raw_deltas["2024-08-09"]["missing"].value == [USDM_KEY]
    assert books["2024-08-09"][f"{USDM_KEY} missing"].value
    assert books["2024-08-09"][f"{SPOT_KEY} start_mode"].value == "previous_day_checkpoint"

    expected = {  # ../shared/reference/data-sources.md; verify-capture prints the same
        USDM_KEY: {
            "diffs": 6551,
            "skipped_before_sync": 4,
            "applied": 6547,
            "gaps": 0,
            "ticker_checks": 629,
            "ticker_mismatches": 0,
        },
        SPOT_KEY: {
            "diffs": 6495,
            "skipped_before_sync": 2,
            "applied": 6493,
            "gaps": 0,
            "ticker_checks": 1072,
            "ticker_mismatches": 0,
        },
    }
    finals = {USDM_KEY: ("61659.7", "61659.8", "2024-08-08"), SPOT_KEY: ("61602.01", "61602.02", "2024-08-09")}
    for key, figures in expected.items():
        details = [m[f"{key} detail"].value for m in books.values() if f"{key} detail" in m]
        assert {name: sum(d["counters"][name] for d in details) for name in figures} == figures
        assert sum(d["trades"] for d in details) == {USDM_KEY: 21313, SPOT_KEY: 19904}[key]
        bid, ask, last_day = finals[key]
        final = books[last_day][f"{key} detail"].value
        assert (final["final_best_bid"], final["final_best_ask"]) == (bid, ask)

    settings = _settings()
    usdm = _instrument(settings, USDM_KEY)
    day = dt.date(2024, 8, 8)
    written = books_partition_dir(settings.lake_dir, usdm.exchange, usdm.symbol, day) / PARTITION_FILE
    expected_schema = output_schema(settings.book.depth, Grid(usdm.tick_size, usdm.lot_size))
    assert pq.read_schema(written).remove_metadata() == expected_schema  # the vendor path's format
    synced = pl.read_parquet(written, columns=["synced"]).get_column("synced")
    assert not synced[0] and synced[-1]
    assert synced.cast(pl.Int8).diff().drop_nulls().min() >= 0  # no gap: once in sync, stays so
    raw = pl.read_parquet(
        raw_partition_dir(settings.lake_dir, "book_delta_v2", usdm.exchange, usdm.symbol, day) / PARTITION_FILE
    )
    assert {"first_update_id", "prev_update_id", "line_no"} <= set(raw.columns)


@pytest.mark.graph
def test_cli_runs_the_whole_graph_over_a_capture_range(real_capture_source, data_dir, dagster_home, capfd, caplog):
    """`market-pipeline run` on the capture source: every stage for both days, the futures
    capture's absent second day recorded as missing rather than failing the range; its negative
    clock skew (receive times ~1.27 s before the exchange's) recorded, without SDK warnings."""
    import duckdb

    from market_pipeline.cli.main import main
    from market_pipeline.core.telemetry.otlp_json import read_points

    code = main(["run", "--start-date", "2024-08-08", "--end-date", "2024-08-09"])

    out, err = capfd.readouterr()
    assert code == 0, err
    assert "emitted no result" not in out + err  # Dagster's ungated-check notice is filtered
    # OpenTelemetry refuses a negative histogram value with a warning each (pytest takes log records off stderr).
    assert "non-negative" not in out + err + "\n".join(r.getMessage() for r in caplog.records)
    skew = [p for p in read_points(data_dir / "metrics") if p["name"] == "mdp_clock_skew_seconds"]
    sampled = {  # every instrument-day's documented sample, in the direction of its skew
        (key, way): sum(p["count"] for p in skew if p["attributes"] == {"instrument": key, "direction": way})
        for key in (SPOT_KEY, USDM_KEY)
        for way in ("early", "late")
    }
    settings, rows = _settings(), {}
    for key in (SPOT_KEY, USDM_KEY):
        instrument = _instrument(settings, key)
        parts = [
            raw_partition_dir(settings.lake_dir, "book_delta_v2", instrument.exchange, instrument.symbol, day)
            / PARTITION_FILE
            for day in (dt.date(2024, 8, 8), dt.date(2024, 8, 9))
        ]
        rows[key] = sum(min(10_000, pq.read_metadata(part).num_rows) for part in parts if part.is_file())
    assert sampled[USDM_KEY, "early"] > 0.9 * rows[USDM_KEY]
    assert {key: sampled[key, "early"] + sampled[key, "late"] for key in rows} == rows
    with duckdb.connect(str(data_dir / "warehouse.duckdb"), read_only=True) as con:
        validated = con.sql("SELECT dt::VARCHAR, exchange FROM validation_reports ORDER BY ALL").fetchall()
        metrics = con.sql("SELECT count(*) FROM pipeline_metrics").fetchone()[0]
    assert validated == [("2024-08-08", "BINANCE"), ("2024-08-08", "BINANCE_FUTURES"), ("2024-08-09", "BINANCE")]
    assert metrics == 3


def test_a_converted_day_is_named_by_its_capture_files(capture_env):
    """Issue 36, item 6: messages about a day's converted table name the captures it came from."""
    from market_pipeline.vendors.registry import build_source

    write_capture(capture_env, CONTINUOUS_DAY2)
    settings = _settings()
    spot = _instrument(settings, SPOT_KEY)
    source = build_source(settings)
    for day, name in ((DAY1, "binance_spot_btcusdt_20231114.txt"), (DAY2, "binance_spot_btcusdt_20231115.txt")):
        [copy] = source.fetch("book_delta_v2", spot, day)
        named = source.origin("book_delta_v2", spot, day, copy)
        assert str(capture_env / name) in named.split(", ") and str(copy) not in named


def test_an_only_files_parts_become_the_cached_tables_that_several_files_make(tmp_path):
    """An instrument's only capture file has its parsed parts moved into the cache as they are;
    several files have theirs streamed into it. The same lines give the same tables either way."""
    from polars.testing import assert_frame_equal

    from market_pipeline.vendors.binance.source import BinanceCaptureSource
    from market_pipeline_tests.support.binance_capture import real_paths
    from market_pipeline_tests.support.capture_prefix import file_prefixes

    # The first lines of each of the spot pair's files (two files, across midnight; the first
    # holds the REST snapshot): the same parts as the whole files, a tenth of the lines to parse.
    several = tmp_path / "several"
    paths = file_prefixes(real_paths(SPOT), several, 4000)
    one = tmp_path / "one"
    one.mkdir()
    (one / paths[0].name).write_bytes(b"".join(path.read_bytes() for path in paths))  # gzip members
    cached = {}
    for folder in (one, several):
        source = BinanceCaptureSource(folder, tmp_path / f"{folder.name}-cache", tmp_path / "lake")
        source.manifest()
        cached[folder.name] = {p.relative_to(source.tables_dir): p for p in source.tables_dir.rglob("*.parquet")}
    assert cached["one"].keys() == cached["several"].keys() and len(cached["one"]) == 5 * 2  # tables x days
    for name, path in cached["one"].items():
        other = cached["several"][name]
        assert pq.read_schema(path) == pq.read_schema(other)
        assert_frame_equal(pl.read_parquet(path), pl.read_parquet(other), check_exact=True)

"""`python -m market_pipeline.bench` on a tiny realistic day: every code path, its JSON line, sane values.

Timings are noise on a shared machine: only their presence and sign are checked, never their size.
"""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from market_pipeline import bench

JSON_KEYS = {
    "deltas",
    "core_deltas_per_s",
    "core_bbo_deltas_per_s",
    "peer_deltas_per_s",
    "peer_ratio",
    "e2e_seconds",
    "read_only_seconds",
    "e2e_over_read",
    "peak_rss_mb",
    "graph_seconds",
    "graph_over_read",
    "graph_peak_rss_mb",
    "graph_stage_seconds",
    "graph_stage_peak_rss_mb",
    "parallel_speedup",
}
GOALS = {"core_deltas_per_s", "peer_ratio", "e2e_over_read", "graph_over_read", "parallel_speedup", "graph_peak_rss_mb"}
STAGES = {"read", "convert", "read_snapshots", "convert_snapshots", "kernel", "decimal", "write", "checkpoint"}


pytestmark = pytest.mark.slow  # the benchmark at a small scale, whole graph included


@pytest.fixture(scope="module")
def bench_run(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("bench_data")
    argv = ["--scale", "0.005", "--peer-rows", "20000", "--parallel-scale", "0.005", "--data-dir", str(data_dir)]
    return data_dir, argv


def test_bench_prints_figures_then_one_json_line(bench_run, dagster_home, capsys):
    data_dir, argv = bench_run
    assert bench.main(argv) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    report = json.loads(lines[-1])
    assert JSON_KEYS <= set(report)
    text = "\n".join(lines[:-1])
    for goal in ("goal >= 50 M/s", "goal >= 100x", "goal <= 2.0x", "goal <= 5x", "goal >= 1.7x", "goal <= 1024 MB"):
        assert goal in text

    settings = bench.bench_settings(data_dir, 0.005)
    day = bench.prepare_day(settings)  # cached: nothing is generated or imported again
    assert report["deltas"] == pq.ParquetFile(day.deltas).metadata.num_rows > 100_000
    assert 0 < report["messages"] < report["deltas"]
    assert report["peer_rows"] == 20_000 and report["peer_deltas_per_s"] > 0
    for key in (
        "core_deltas_per_s",
        "core_bbo_deltas_per_s",
        "core_seconds",
        "peer_ratio",
        "e2e_seconds",
        "read_only_seconds",
        "e2e_over_read",
    ):
        assert report[key] > 0, key
    assert report["e2e_over_read"] == pytest.approx(report["e2e_seconds"] / report["read_only_seconds"], rel=1e-2)
    assert 50 < report["peak_rss_mb"] < 16_000  # the child's own peak, in MB
    # The day was rebuilt for real: one row per vendor snapshot plus one per 100 ms, all matching.
    assert report["vendor_snapshots"] == report["vendor_snapshots_matched"] == 864_000
    assert report["rows_written"] == 2 * 864_000
    assert STAGES <= set(report["e2e_stage_seconds"]) and STAGES <= set(report["e2e_stage_cpu_seconds"])
    assert set(report["goals_met"]) == GOALS
    # The whole graph ran (every stage has a step) and its process tree was sampled.
    assert report["graph_exit_code"] == 0, (data_dir / "bench-graph.log").read_text()[-3000:]
    stages = set(report["graph_stage_seconds"])
    assert {"raw_book_deltas", "reconstructed_books", "lake_views"} <= stages
    assert stages == set(report["graph_stage_peak_rss_mb"])
    assert report["graph_seconds"] > report["graph_run_seconds"] > 0 and report["raw_read_seconds"] > 0
    assert report["graph_peak_rss_mb"] > 50
    assert report["parallel_speedup"] > 0 and report["parallel_scale"] == 0.005
    assert "where its time goes" in text


def test_core_counts_every_delta_of_whole_messages(bench_run):
    data_dir, _ = bench_run
    day = bench.prepare_day(bench.bench_settings(data_dir, 0.005))
    whole = bench.core(day.deltas, 0.01, 0.00001)
    head = bench.core(day.deltas, 0.01, 0.00001, rows=12_345)
    assert whole.deltas == pq.ParquetFile(day.deltas).metadata.num_rows
    assert head.deltas == 12_345 and 0 < head.messages < whole.messages


def test_ranges_run_the_graph_on_two_instruments_and_three_days(tmp_path, monkeypatch):
    """`--ranges`: which runs it asks for, over the bench day's own generated sources."""
    import datetime as dt

    from market_pipeline.vendors.synthetic.source import SyntheticSource

    (tmp_path / "sources").mkdir()
    generated, runs = [], []
    monkeypatch.setattr(
        SyntheticSource, "ensure_day", lambda self, instrument, day: generated.append((instrument.key, day))
    )

    def fake_run_graph(settings, day, select=None, workers=None, end=None):
        runs.append(([i.key for i in settings.universe], day, end, workers, settings.data_dir))
        return bench.GraphRun(0, 1.0, 0.5, 1.0, 512.0, {}, tmp_path / "log")

    monkeypatch.setattr(bench, "run_graph", fake_run_graph)
    day = dt.date(2024, 3, 1)
    result = bench.range_memory(tmp_path, 0.5, day, print)
    ranges = tmp_path / "ranges"
    assert (ranges / "sources").resolve() == (tmp_path / "sources").resolve()
    assert runs == [
        (bench.PARALLEL_INSTRUMENTS, day, day, None, ranges),
        ([bench.BENCH_INSTRUMENT], day, day + dt.timedelta(days=2), None, ranges),
    ]
    three_days = [(bench.BENCH_INSTRUMENT, day + dt.timedelta(days=k)) for k in range(3)]
    assert generated == [(key, day) for key in bench.PARALLEL_INSTRUMENTS] + three_days
    assert set(result) == {"two_instruments", "three_days"} and result["three_days"].peak_rss_mb == 512.0

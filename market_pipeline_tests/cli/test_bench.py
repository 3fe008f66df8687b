"""`python -m market_pipeline.bench` on a tiny realistic day: every code path, its JSON line, sane values.

Timings are noise on a shared machine: only their presence and sign are checked, never their size.
The `--vendors` tests (argument handling, verdicts, the vendors' files and floor on a tiny day) run
no Dagster subprocess.
"""

from __future__ import annotations

import datetime as dt
import gzip
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from market_pipeline import bench
from market_pipeline.bench import floors

JSON_KEYS = {
    "deltas",
    "core_deltas_per_s",
    "core_bbo_deltas_per_s",
    "peer_deltas_per_s",
    "peer_ratio",
    "thin_book_row_ns",
    "full_book_row_ns",
    "thin_book_over_full",
    "e2e_seconds",
    "read_only_seconds",
    "e2e_over_read",
    "peak_rss_mb",
    "graph_seconds",
    "graph_over_read",
    "book_floor_seconds",
    "e2e_over_floor",
    "graph_floor_seconds",
    "graph_over_floor",
    "graph_peak_rss_mb",
    "graph_stage_seconds",
    "graph_stage_peak_rss_mb",
    "parallel_speedup",
}
GOALS = {
    "core_deltas_per_s",
    "peer_ratio",
    "thin_book_over_full",
    "e2e_over_floor",
    "graph_over_read",
    "graph_over_floor",
    "parallel_speedup",
    "graph_peak_rss_mb",
}
STAGES = {"read", "convert", "read_snapshots", "convert_snapshots", "kernel", "decimal", "write", "checkpoint"}


@pytest.fixture(scope="module")
def bench_run(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("bench_data")
    argv = ["--scale", "0.005", "--peer-rows", "20000", "--parallel-scale", "0.005", "--data-dir", str(data_dir)]
    return data_dir, argv


@pytest.mark.slow  # the benchmark at a small scale, whole graph included
@pytest.mark.graph
def test_bench_prints_figures_then_one_json_line(bench_run, dagster_home, capsys, monkeypatch):
    data_dir, argv = bench_run
    lake_before_graph = []
    real_run_graph = bench.run_graph

    def run_graph(settings, day, *args, **kwargs):
        if settings.data_dir.resolve() == data_dir.resolve():  # the bench day's graph, not the parallel runs
            lake_before_graph.append(settings.lake_dir.exists())
        return real_run_graph(settings, day, *args, **kwargs)

    monkeypatch.setattr(bench, "run_graph", run_graph)
    assert bench.main(argv) == 0
    # The graph ran as a first run of the day, into a lake without what earlier runs stored.
    assert lake_before_graph == [False]
    lines = capsys.readouterr().out.strip().splitlines()
    report = json.loads(lines[-1])
    assert JSON_KEYS <= set(report)
    text = "\n".join(lines[:-1])
    for goal in ("goal >= 50 M/s", "goal >= 100x", "goal <= 2.0x", "goal <= 5x", "goal >= 1.7x", "goal <= 900 MB"):
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
    assert report["thin_book_row_ns"] > 0 and report["full_book_row_ns"] > 0
    assert report["thin_book_over_full"] == pytest.approx(
        report["thin_book_row_ns"] / report["full_book_row_ns"], rel=0.05, abs=0.05
    )
    assert "thin book:" in text
    assert report["e2e_over_read"] == pytest.approx(report["e2e_seconds"] / report["read_only_seconds"], rel=1e-2)
    # The floors: what the stage reads plus its books written again; the day's vendor files read
    # plus every lake file of the day the graph wrote, written again.
    assert report["book_floor_seconds"] == pytest.approx(
        report["read_only_seconds"] + report["book_floor_write_seconds"], rel=1e-9
    )
    assert report["book_floor_write_seconds"] > 0
    assert report["e2e_over_floor"] == pytest.approx(report["e2e_seconds"] / report["book_floor_seconds"], rel=1e-2)
    assert report["graph_floor_read_seconds"] > 0 and report["graph_floor_write_seconds"] > 0
    assert report["graph_floor_outputs"] == len(floors.lake_outputs(settings.lake_dir, bench.BENCH_DAY)) > 5
    graph_over_floor = report["graph_seconds"] / report["graph_floor_seconds"]
    assert report["graph_over_floor"] == pytest.approx(graph_over_floor, rel=1e-2)
    assert 50 < report["peak_rss_mb"] < 16_000  # the child's own peak, in MB
    # The day was rebuilt for real: one row per vendor snapshot plus one per sample, all matching (at
    # the tests' cadence; `make bench` keeps the production defaults, 100 ms each).
    snapshots = settings.synthetic.snapshots_per_day
    assert report["vendor_snapshots"] == report["vendor_snapshots_matched"] == snapshots
    assert report["rows_written"] == snapshots + 86_400_000 // settings.book.sample_interval_ms
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
    # CPU sampled inside each run's window (RUN_START to its end event), over that window's wall.
    assert 0 < report["parallel_serial_core_use"] < 1.2 and 0 < report["parallel_core_use"] < 1.2
    assert "where its time goes" in text


@pytest.mark.slow  # the benchmark at a small scale, whole graph included
def test_core_counts_every_delta_of_whole_messages(bench_run):
    data_dir, _ = bench_run
    day = bench.prepare_day(bench.bench_settings(data_dir, 0.005))
    whole = bench.core(day.deltas, 0.01, 0.00001)
    head = bench.core(day.deltas, 0.01, 0.00001, rows=12_345)
    assert whole.deltas == pq.ParquetFile(day.deltas).metadata.num_rows
    assert head.deltas == 12_345 and 0 < head.messages < whole.messages


def test_book_rows_writes_a_row_after_every_message():
    """The thin-book figure's run: its levels set up, then one row per one-row message."""
    for levels in (2, 40):
        run = bench.kernel.book_rows(levels, messages=1_000)
        assert run.deltas == run.messages == 2 * levels + 1_000


@pytest.mark.slow  # the benchmark at a small scale, whole graph included
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


# --- --vendors -----------------------------------------------------------------------------------


def _vendor_run(seconds: float, peak: float, read: float = 1.0, write: float = 1.0, code: int = 0, steps=None):
    from market_pipeline.bench.vendors import VendorRun

    return VendorRun(code, seconds, peak, read, write, 7, Path("log"), steps or {})


@pytest.mark.parametrize(
    ("argv", "vendors", "scale2"),
    [([], False, False), (["--vendors"], True, False), (["--vendors-scale2"], False, True)],
)
@pytest.mark.nothing_starts("bench.run and bench.prepare_day are stubbed")
def test_vendor_options_reach_the_run(argv, vendors, scale2, monkeypatch, tmp_path, capsys):
    calls = []
    monkeypatch.setattr(bench, "prepare_day", lambda settings: settings)
    monkeypatch.setattr(bench, "run", lambda *args, **kwargs: calls.append(kwargs) or {"ok": 1})
    assert bench.main(["--scale", "0.01", "--data-dir", str(tmp_path), *argv]) == 0
    (kwargs,) = calls
    assert (kwargs["vendors"], kwargs["vendors_scale2"]) == (vendors, scale2)
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == {"ok": 1}


TARDIS_STEPS = {"raw_trades": 0.5, "raw_book_deltas": 9.0, "ohlcv_bars": 1.0, "reconstructed_books": 4.0}
TARDIS_STEPS |= {"freshness": 0.01, "lake_views": 0.1}


def test_vendor_verdicts_and_figures():
    from market_pipeline.bench.vendors import SampledRun, vendor_report

    runs = {
        "crypto_lake": _vendor_run(10.0, 600.0, read=3.0, write=2.0),  # 2.0x its floor: met
        "tardis": _vendor_run(16.0, 1100.0, read=6.0, write=2.0, steps=TARDIS_STEPS),  # 1.6x, 1100 MB: not met
        "capture": _vendor_run(15.0, 900.0, read=5.0, write=2.0),  # 1.5x, 2.14x its floor
        "capture_tickers": _vendor_run(25.0, 850.0, read=10.0, write=3.0),  # 2.5x: no goal; 1.92x its floor
    }
    double = {
        "crypto_lake": _vendor_run(20.0, 660.0),  # +10%: flat
        "tardis": _vendor_run(30.0, 1300.0),  # +18%: not flat
        "capture": _vendor_run(30.0, 950.0, code=1),  # failed: not met
        "capture_tickers": _vendor_run(50.0, 850.0),
    }
    lines: list[str] = []
    verified = {"capture": SampledRun(0, 4.0, 300.0), "capture_tickers": SampledRun(0, 9.0, 400.0)}
    goals, figures = vendor_report(runs, double, verified, lines.append)
    assert goals == {
        "vendor_peak_mb_crypto_lake": True,
        "vendor_over_floor_crypto_lake": True,
        "vendor_flat_crypto_lake": True,
        "vendor_peak_mb_tardis": False,
        "vendor_over_floor_tardis": True,
        "vendor_over_crypto_lake_tardis": False,
        "vendor_flat_tardis": False,
        "vendor_peak_mb_capture": True,
        "vendor_over_floor_capture": False,
        "vendor_over_crypto_lake_capture": True,
        "vendor_flat_capture": False,
        "vendor_peak_mb_capture_tickers": True,
        "vendor_over_floor_capture_tickers": True,
        "vendor_flat_capture_tickers": True,
    }
    assert figures["vendors"]["tardis"] == {
        "seconds": 16.0,
        "exit_code": 0,
        "peak_mb": 1100.0,
        "over_crypto_lake": 1.6,
        "floor_seconds": 8.0,
        "floor_read_seconds": 6.0,
        "floor_write_seconds": 2.0,
        "floor_outputs": 7,
        "over_floor": 2.0,
        "step_seconds": TARDIS_STEPS,
        "seconds_scale2": 30.0,
        "peak_mb_scale2": 1300.0,
    }
    assert (figures["verify_capture_seconds"], figures["verify_capture_peak_mb"]) == (4.0, 300.0)
    assert (figures["verify_capture_tickers_seconds"], figures["verify_capture_tickers_peak_mb"]) == (9.0, 400.0)
    text = "\n".join(lines)
    assert "1.60x Crypto Lake -- goal <= 1.5x: NOT met" in text and "peak  1100 MB -- goal <= 900 MB: NOT met" in text
    # Where the time goes: the slowest steps first, at most four.
    assert "    where its time goes: raw_book_deltas 9.00 s, reconstructed_books 4.00 s, ohlcv_bars 1.00 s, " in text
    assert "freshness" not in text
    assert "= 1.18x -- goal within 10%: NOT met" in text and "verify-capture on the day's capture: 4.00 s" in text
    # The capture with a bookTicker at every top holds more than the day the others hold.
    not_a_goal = "2.50x Crypto Lake (more lines than the day the others hold: not a goal)"
    assert f"= 1.92x -- goal <= 2.0x: met; {not_a_goal}" in text
    assert "verify-capture on the capture with a bookTicker at every top: 9.00 s" in text
    # A failed run meets no goal, and without the doubled day flatness is not judged.
    failed = {**runs, "capture": _vendor_run(1.0, 10.0, code=2)}
    goals, _ = vendor_report(failed, None, None, lines.append)
    assert not any(v for k, v in goals.items() if k.endswith("_capture")) and not any("flat" in k for k in goals)
    assert goals["vendor_peak_mb_capture_tickers"]
    assert lines[-1] == "  flat when the day doubles: not measured (--vendors-scale2 measures it)"


def _recording(init, paths: list):
    """`init` (a TextStream's), recording the path of every stream opened."""

    def recorded(self, path):
        paths.append(path)
        init(self, path)

    return recorded


def test_vendor_files_and_floor_on_a_tiny_day(tmp_path, monkeypatch):
    """The bench day as each vendor's files (written once), and the floor's reads and writes."""
    import os

    import pyarrow as pa

    from market_pipeline.bench import vendors

    settings = bench.bench_settings(tmp_path, 0.01)
    bench.generate_days(settings, bench.BENCH_DAY, bench.BENCH_DAY)
    (instrument,) = settings.universe
    root = tmp_path / "sources" / "synthetic"
    inputs = vendors.vendor_files(root, instrument, bench.BENCH_DAY, tmp_path / "vendors")
    assert set(inputs) == set(vendors.VENDORS)
    assert [p.name for p in inputs["capture"].files] == ["binance_spot_btcusdt_20240301.gz"]
    # The second capture: the same diffs and trades, a bookTicker at every change of the top.
    assert [p.name for p in inputs["capture_tickers"].files] == ["binance_spot_btcusdt_20240301.gz"]
    assert inputs["capture_tickers"].env["PIPELINE_CAPTURE_DIR"] == str(tmp_path / "vendors" / "capture_tickers")
    lines = {v: gzip.decompress(inputs[v].files[0].read_bytes()).splitlines() for v in ("capture", "capture_tickers")}
    tickers = {v: [line for line in lines[v] if b"@bookTicker" in line] for v in lines}
    assert [line for line in lines["capture"] if b"@bookTicker" not in line] == [
        line for line in lines["capture_tickers"] if b"@bookTicker" not in line
    ]
    assert tickers["capture_tickers"] and tickers["capture_tickers"] != tickers["capture"]
    assert len(inputs["tardis"].files) == 3 and len(inputs["crypto_lake"].files) == 3
    assert inputs["tardis"].env == {
        "PIPELINE_SOURCE": "tardis",
        "PIPELINE_TARDIS_DIR": str(tmp_path / "vendors" / "tardis"),
    }
    assert inputs["crypto_lake"].env["PIPELINE_LOCAL_DIR"] == str(root)
    stamps = {p: p.stat().st_mtime_ns for v in inputs.values() for p in v.files}
    vendors.vendor_files(root, instrument, bench.BENCH_DAY, tmp_path / "vendors")  # cached: nothing rewritten
    assert stamps == {p: p.stat().st_mtime_ns for p in stamps}

    for vendor, files in inputs.items():
        assert floors.read_seconds(files.reader, files.files) > 0, vendor
    # The Tardis L2 and snapshot files are read by the import's line readers, whole: only the
    # trades file goes to Arrow's reader.
    from market_pipeline.vendors.tardis import csv_stream

    to_arrow = []
    monkeypatch.setattr(csv_stream.TextStream, "__init__", _recording(csv_stream.TextStream.__init__, to_arrow))
    floors.read_seconds("tardis", inputs["tardis"].files)
    assert [p.name.split("_")[1] for p in to_arrow] == ["trades"]

    # The rewrite keeps each column's codec, dictionary and delta encoding.
    lake = tmp_path / "lake"
    (lake / "a").mkdir(parents=True)
    table = pa.table({"t": pa.array(range(1000), pa.int64()), "p": pa.array([1.5, 2.5] * 500)})
    pq.write_table(
        table,
        lake / "a" / "x.parquet",
        compression={"t": "lz4", "p": "none"},
        use_dictionary=["p"],
        column_encoding={"t": "DELTA_BINARY_PACKED"},
    )
    reader = pq.ParquetFile(lake / "a" / "x.parquet")
    assert floors.writer_options(reader.metadata, reader.schema_arrow) == {
        "compression": {"t": "lz4", "p": "none"},
        "use_dictionary": ["p"],
        "column_encoding": {"t": "DELTA_BINARY_PACKED"},
    }
    for path in inputs["crypto_lake"].files:
        os.link(path, lake / f"{path.parent.parent.parent.parent.name}.parquet")
    outputs = floors.lake_outputs(lake)
    assert len(outputs) == 4 and floors.write_seconds(outputs) > 0
    # A day's outputs are those of no other day's partition.
    (lake / "t" / "dt=2024-03-02").mkdir(parents=True)
    os.link(lake / "a" / "x.parquet", lake / "t" / "dt=2024-03-02" / "data.parquet")
    assert floors.lake_outputs(lake, bench.BENCH_DAY) == outputs


def test_each_vendor_runs_the_graph_from_its_own_files_in_a_fresh_data_dir(tmp_path, monkeypatch):
    from market_pipeline.bench import vendors

    settings = bench.bench_settings(tmp_path, 0.01)
    readers = {"crypto_lake": "crypto_lake", "tardis": "tardis", "capture": "capture", "capture_tickers": "capture"}
    files = {
        v: vendors.VendorFiles({"PIPELINE_SOURCE": v}, [tmp_path / f"{v}.in"], readers[v]) for v in vendors.VENDORS
    }
    monkeypatch.setattr(vendors, "vendor_files", lambda root, instrument, day, out: files)
    runs, floors = [], []

    def fake_run_graph(run_settings, day, select=None, workers=None, end=None, source_env=None, reset=None):
        assert not run_settings.data_dir.exists()  # fresh: a previous run's files were removed
        run_settings.lake_dir.mkdir(parents=True)
        runs.append((run_settings.data_dir, day, source_env))
        return bench.GraphRun(0, 3.0, 2.0, 1.0, 256.0, {}, tmp_path / "log")

    stale = tmp_path / "vendor_runs" / "tardis" / "stale.parquet"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"left over")
    monkeypatch.setattr(vendors, "run_graph", fake_run_graph)
    monkeypatch.setattr(vendors, "read_seconds", lambda reader, paths: floors.append((reader, paths)) or 1.0)
    logs = []
    monkeypatch.setattr(
        vendors,
        "run_sampled",
        lambda argv, env, log: logs.append(log.name) or (0, 2.0, type("S", (), {"peak_mb": lambda s: 64.0})()),
    )
    result, verify = vendors.measure_vendors(settings, bench.BENCH_DAY, print)
    assert runs == [(tmp_path / "vendor_runs" / v, bench.BENCH_DAY, {"PIPELINE_SOURCE": v}) for v in vendors.VENDORS]
    assert floors == [(readers[v], [tmp_path / f"{v}.in"]) for v in vendors.VENDORS]
    assert {v: (r.seconds, r.peak_mb, r.read_seconds, r.outputs) for v, r in result.items()} == dict.fromkeys(
        vendors.VENDORS, (3.0, 256.0, 1.0, 0)
    )
    # verify-capture on each capture, each its own log.
    assert verify == dict.fromkeys(("capture", "capture_tickers"), vendors.SampledRun(0, 2.0, 64.0))
    assert logs == ["bench-verify-capture.log", "bench-verify-capture-tickers.log"]


# --- --remote ------------------------------------------------------------------------------------


@pytest.mark.nothing_starts("bench.run and bench.prepare_day are stubbed")
def test_remote_option_reaches_the_run(monkeypatch, tmp_path, capsys):
    calls = []
    monkeypatch.setattr(bench, "prepare_day", lambda settings: settings)
    monkeypatch.setattr(bench, "run", lambda *args, **kwargs: calls.append(kwargs) or {"ok": 1})
    for argv, remote in (([], False), (["--remote"], True)):
        assert bench.main(["--scale", "0.01", "--data-dir", str(tmp_path), *argv]) == 0
        assert calls.pop()["remote"] is remote


def test_remote_figures_per_stage_and_verdict():
    from market_pipeline.bench.remote import RemoteFigures, gets_per_stage, remote_goal_met, remote_report

    def point(name, stage, value):
        return {"name": name, "attributes": {"stage": stage}, "value": value}

    points = [
        point("mdp_lake_get_requests_total", "pipeline_metrics", 3.0),
        point("mdp_lake_get_bytes_total", "pipeline_metrics", 300.0),
        point("mdp_lake_get_requests_total", "pipeline_metrics", 2.0),  # delta sums: a later export
        point("mdp_lake_get_bytes_total", "pipeline_metrics", 200.0),
        point("mdp_lake_get_requests_total", "ohlcv_bars", 1.0),
        point("mdp_lake_get_bytes_total", "ohlcv_bars", 10.0),
        point("mdp_lake_requests_total", "ohlcv_bars", 7.0),  # all requests: not a GET figure
        {"name": "mdp_stage_duration_seconds", "attributes": {"stage": "ohlcv_bars"}, "value": 4.0},
    ]
    gets = gets_per_stage(points)
    assert gets == {"ohlcv_bars": (1, 10), "pipeline_metrics": (5, 500)}

    def graph(seconds, code=0):
        return bench.GraphRun(code, seconds, seconds, 1.0, 100.0, {}, Path("log"))

    local = graph(10.0)
    assert remote_goal_met(local, graph(15.0)) and not remote_goal_met(local, graph(15.01))
    assert not remote_goal_met(local, graph(12.0, code=1)) and not remote_goal_met(graph(10.0, code=1), graph(1.0))
    lines: list[str] = []
    fields = remote_report(RemoteFigures(local, graph(12.0), gets), lines.append)
    assert "= 1.20x -- goal <= 1.5x: met" in lines[0]
    assert lines[2].split() == ["ohlcv_bars", "1", "0.0"] and lines[3].split() == ["pipeline_metrics", "5", "0.0"]
    assert fields == {
        "remote_seconds": 12.0,
        "remote_local_seconds": 10.0,
        "remote_over_local": 1.2,
        "remote_exit_code": 0,
        "remote_server_cpu_seconds": 0.0,
        "remote_gets": {"ohlcv_bars": 1, "pipeline_metrics": 5},
        "remote_get_bytes": {"ohlcv_bars": 10, "pipeline_metrics": 500},
    }


@pytest.mark.parametrize(("compiled", "reset"), [(True, True), (True, False), (False, True)])
def test_a_graph_run_that_compiled_kernels_is_measured_again(tmp_path, monkeypatch, compiled, reset):
    """numba compiling a kernel its cache lacked (after a source change, or a signature only one
    vendor's tables need) is not the graph's time: with a reset of its data directory such a run
    is run again and the second measured; without, it is named. A compile is seen in the kernel
    cache (a kernel's index written), whatever the run's log says."""
    from market_pipeline.bench import graph as bench_graph

    cache = tmp_path / "numba" / "book_0123"
    cache.mkdir(parents=True)
    loaded = cache / "ladder.top_levels-40.py311.nbi"  # in the cache before: loaded, not compiled
    loaded.write_bytes(b"index")
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path / "numba"))
    runs, resets = [], []

    def run_once(settings, day, *args):
        if compiled and not runs:
            (cache / "delta_replay.replay_lake_batch-266.py311.nbi").write_bytes(b"index")
            (cache / "delta_replay.replay_lake_batch-266.py311.1.nbc").write_bytes(b"code")
        log = tmp_path / f"graph-{len(runs)}.log"
        log.write_text("[    1 s] step raw_trades: started\n")
        runs.append(log)
        return bench_graph.GraphRun(0, 30.0 - 10 * len(runs), 1.0, 1.0, 800.0, {}, log)

    monkeypatch.setattr(bench_graph, "_run_graph_once", run_once)
    graph = bench_graph.run_graph(None, dt.date(2024, 3, 1), reset=(lambda: resets.append(1)) if reset else None)
    kernels = ("delta_replay.replay_lake_batch",) if compiled else ()
    measured_again = compiled and reset
    assert (len(runs), len(resets), graph.seconds) == ((2, 1, 10.0) if measured_again else (1, 0, 20.0))
    assert graph.compiled_first == kernels


@pytest.mark.parametrize("compiled", [True, False])
def test_a_book_stage_run_that_compiled_kernels_is_measured_again(tmp_path, monkeypatch, compiled):
    """The book stage's figures after a kernel source change are not the compile's: a run that
    wrote a kernel's index into the cache is run again, the second measured, the kernels named."""
    from market_pipeline.bench import day as bench_day

    cache = tmp_path / "numba" / "book_0123"
    cache.mkdir(parents=True)
    (cache / "ladder.top_levels-40.py311.nbi").write_bytes(b"index")  # loaded, not compiled
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path / "numba"))
    runs = []

    def run_once(bench_day_arg):
        if compiled and not runs:
            (cache / "delta_replay.replay_lake_batch-266.py311.nbi").write_bytes(b"index")
        runs.append(bench_day_arg)
        return {"call_seconds": 10.0 if len(runs) > 1 else 40.0}  # the first run's time was compiling

    monkeypatch.setattr(bench_day, "_end_to_end_once", run_once)
    report = bench_day.end_to_end("the day")
    if compiled:
        assert report == {"call_seconds": 10.0, "compiled_first": ["delta_replay.replay_lake_batch"]}
        assert runs == ["the day", "the day"]
    else:
        assert report == {"call_seconds": 40.0, "compiled_first": []} and runs == ["the day"]


def test_core_use_counts_the_cpu_of_the_run_not_of_the_start_up():
    """The parallel figure's core use is over the run the speedup is timed on: CPU spent importing
    before RUN_START (one busy core) does not lower it."""
    import os

    from market_pipeline.bench import graph as bench_graph

    sampler = bench_graph.TreeSampler(os.getpid())
    # Tree CPU seconds at each sample: 5 s of start-up on one core, then a run of 10 s at 1.6 cores.
    sampler.cpu_samples = [(0.0, 0.0), (5.0, 5.0), (10.0, 13.0), (15.0, 21.0), (16.0, 21.5)]
    assert sampler.cpu_between(5.0, 15.0) == 16.0 and sampler.cpu_between(5.5, 15.9) == 16.0
    assert sampler.cpu_between(20.0, 30.0) == 0.0
    run = bench_graph.GraphRun(0, 16.0, 10.0, sampler.cpu_between(5.0, 15.0), 100.0, {}, Path("log"))
    assert bench._core_use(run, cores=2) == 0.8

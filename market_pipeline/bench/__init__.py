"""`make bench`: how fast the whole graph and the book rebuild are on one realistic synthetic day.

Run as `python -m market_pipeline.bench [--scale S] [--peer-rows N] [--parallel-scale P] [--ranges]
[--vendors] [--vendors-scale2] [--remote]`. It
builds (once, cached by the synthetic source's fingerprint) a `profile=realistic` day of one
instrument, imports it into the raw lake (again only when the generated day changed), then
measures in one run:

- read only: the raw delta and snapshot Parquet columns the rebuild reads, in the same batches
  and on two threads as the rebuild does, and nothing else (best of two runs);
- raw read: every raw Parquet file of the day, all columns (best of two);
- floors (`bench/floors.py`): the book stage's is its read only plus writing the books partition
  it wrote once more with the same codecs; the whole graph's is reading the day's vendor files
  once plus writing every lake file of the day it wrote once more; goal: at most 2x each;
- end to end: `book.assets.rebuild_instrument_day` (read, convert, replay, build the decimal
  output, write books, agreement and checkpoint) in a child process, so its peak RSS is its
  own; the time is the call, imports excluded, loading numba's cached machine code included;
- core: the production kernel `delta_replay.replay_lake_batch` as production runs it, inside
  that rebuild (a row every 100 ms and at each vendor snapshot, depth 20, snapshots checked):
  the day's deltas over the kernel's wall time; beside it the same kernel over the whole day
  with a best bid/ask row after every message (the work the peer does), into reused output
  buffers as the rebuild's;
- peer: the vendor's `lakeapi.orderbook.OrderBookUpdater` on the first `--peer-rows` deltas,
  best bid/ask after every message, against our kernel on the same rows (best of 3: one timing swung 88x-134x);
- graph: `market-pipeline run` of the whole graph for the day, in a subprocess with its own
  DAGSTER_HOME; the resident memory (PSS) of its whole process tree is sampled every 0.2 s; seconds per step
  from the run's step events, peak RSS per step from the samples inside the step;
- parallel: the raw and book steps of two instruments (scale `--parallel-scale`) with
  PIPELINE_WORKERS=2 against 1: the Dagster run's wall time, and how busy the cores were during
  it (CPU seconds of the process tree over the run's wall seconds times cores). `market-pipeline run` runs its
  steps one after another, but each instrument-day already keeps more than one core busy (the
  import encodes on a writer thread, the rebuild reads, replays and writes on four), so on two
  cores a second worker has little left to use;
- ranges (`--ranges` only, about 3 minutes more): the whole graph on two instruments for the day
  and on one instrument for three days, with the default workers, sampled as the graph above:
  peak memory must not grow with instruments or days;
- vendors (`--vendors` only, four more whole-graph runs): the day as Crypto Lake, Tardis and two capture
  files (a bookTicker at each vendor snapshot; at every change of the top), the whole graph from each
  against its floor, verify-capture on each capture (`bench/vendors.py`); `--vendors-scale2`: also at 2x;
- remote (`--remote` only, two more whole-graph runs over two days): the lake on a loopback S3 bucket
  (moto's server on 127.0.0.1) against local disk, and the lake objects each step fetched
  (`bench/remote.py`; goal: at most 1.5x the local wall);
- read API (`--read-api` only): `market_pipeline.lake`'s `books()` of the day with 5 columns (rows/s)
  and `book_at` for 1 M instants, over the books the graph run wrote (`bench/read_api.py`).

The day, its read floors and the end-to-end child are in `bench/day.py`, the whole-graph
subprocess and its sampler in `bench/graph.py`, the core and peer in `bench/kernel.py`.
Human-readable figures go first; the last line is one JSON object.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path

from market_pipeline.bench.day import (
    BENCH_DAY,
    BENCH_INSTRUMENT,
    BenchDay,
    bench_settings,
    end_to_end,
    generate_days,
    prepare_day,
    raw_read_seconds,
    read_only_seconds,
)
from market_pipeline.bench.floors import lake_outputs, read_seconds, synthetic_day_files, write_seconds
from market_pipeline.bench.graph import RSS_SAMPLE_SECONDS, GraphRun, quiet_dagster, run_graph
from market_pipeline.bench.kernel import THIN_BOOK_DEPTH, book_rows, core, peer
from market_pipeline.bench.read_api import measure_read_api
from market_pipeline.bench.remote import measure_remote, remote_report
from market_pipeline.bench.vendors import GOAL_OVER_FLOOR, GOAL_PEAK_MB, measure_vendors, vendor_report
from market_pipeline.core.lake import parquet_io
from market_pipeline.settings import PipelineSettings

# What the bench offers its callers (`__main__`, the tests): the run and its parts, by name.
__all__ = [
    "BENCH_DAY",
    "BENCH_INSTRUMENT",
    "PARALLEL_INSTRUMENTS",
    "GraphRun",
    "bench_settings",
    "core",
    "generate_days",
    "main",
    "prepare_day",
    "range_memory",
    "run",
    "run_graph",
]

PARALLEL_INSTRUMENTS = ["BINANCE:BTC-USDT", "BINANCE_FUTURES:BTC-USDT-PERP"]
PARALLEL_STEPS = ("raw_book_deltas", "raw_book_snapshots", "reconstructed_books")
DEFAULT_PARALLEL_SCALE = 0.25
RANGE_DAYS = 3  # the memory goal holds for a range of days too (issue 11, item 1)
DEFAULT_DATA_DIR = Path("data/bench")
DEFAULT_PEER_ROWS = 3_000_000
# The goals (issue 3, item 8; issue 11, items 2 and 3).
GOAL_CORE_DELTAS_PER_S = 50e6
GOAL_PEER_RATIO = 100.0
GOAL_GRAPH_OVER_READ = 5.0  # the whole graph over reading the day's raw Parquet
GOAL_PARALLEL_SPEEDUP = 1.7
# A row of a book with fewer levels than the row holds costs at most this many times a full book's.
GOAL_THIN_OVER_FULL = 2.0


def forget_outputs(settings: PipelineSettings) -> None:
    """Remove the lake and the warehouse a graph run writes into (the synthetic source's own files
    stay): the raw partitions `prepare_day` imported are written again by the run."""
    shutil.rmtree(settings.lake_dir, ignore_errors=True)
    settings.warehouse_path.unlink(missing_ok=True)


def parallel_speedup(data_dir: Path, scale: float, day: dt.date, say: Callable[[str], None]) -> dict:
    """The raw and book steps of two instruments with PIPELINE_WORKERS=2 against 1 (run wall time)."""

    settings = bench_settings(data_dir, scale, PARALLEL_INSTRUMENTS)
    generate_days(settings, day, day)
    runs = {}
    for workers in (1, 2):
        runs[workers] = graph = run_graph(settings, day, list(PARALLEL_STEPS), workers)
        if graph.exit_code != 0:
            say(f"parallel run with {workers} worker(s) exited {graph.exit_code}; see {graph.log}")
    serial, parallel = runs[1], runs[2]
    cores = os.cpu_count() or 1
    return {
        "serial_seconds": round(serial.run_seconds, 3),
        "parallel_seconds": round(parallel.run_seconds, 3),
        "speedup": serial.run_seconds / parallel.run_seconds if parallel.run_seconds else 0.0,
        # How busy the cores were during the run, the span the speedup is measured over (not start-up).
        "serial_core_use": _core_use(serial, cores),
        "parallel_core_use": _core_use(parallel, cores),
    }


def _core_use(graph: GraphRun, cores: int) -> float:
    return round(graph.run_cpu_seconds / (graph.run_seconds * cores), 3) if graph.run_seconds else 0.0


def range_memory(data_dir: Path, scale: float, day: dt.date, say: Callable[[str], None]) -> dict[str, GraphRun]:
    """The whole graph's peak memory on two instruments for `day`, and on one instrument for
    RANGE_DAYS days from `day` (default workers), in `data_dir`/ranges, which shares the bench
    day's generated sources."""
    ranges = data_dir / "ranges"
    ranges.mkdir(parents=True, exist_ok=True)
    if not (ranges / "sources").exists():
        (ranges / "sources").symlink_to((data_dir / "sources").resolve())
    cases = {
        "two_instruments": (PARALLEL_INSTRUMENTS, day),
        "three_days": ([BENCH_INSTRUMENT], day + dt.timedelta(days=RANGE_DAYS - 1)),
    }
    runs = {}
    for name, (instruments, end) in cases.items():
        settings = bench_settings(ranges, scale, instruments)
        generate_days(settings, day, end)
        runs[name] = graph = run_graph(settings, day, end=end)
        if graph.exit_code != 0:
            say(f"the {name.replace('_', ' ')} run exited {graph.exit_code}; see {graph.log}")
    return runs


def _verdict(met: bool) -> str:
    return "met" if met else "NOT met"


def run(
    bench: BenchDay,
    peer_rows: int,
    parallel_scale: float | None = None,
    say: Callable[[str], None] = print,
    ranges: bool = False,
    vendors: bool = False,
    vendors_scale2: bool = False,
    read_api: bool = False,
    remote: bool = False,
) -> dict:
    """Every measurement on one prepared day; `say` gets the human-readable lines."""
    grid = bench.instrument
    tick, lot = float(grid.tick_size), float(grid.lot_size)
    read_first = read_only_seconds(bench)
    e2e = end_to_end(bench)
    read_only = min(read_first, read_only_seconds(bench))
    deltas = parquet_io.num_rows(bench.deltas)
    kernel_seconds = e2e["seconds"]["kernel"]
    core_rate = deltas / kernel_seconds if kernel_seconds else 0.0
    bbo = core(bench.deltas, tick, lot)
    theirs = peer(bench.deltas, peer_rows)
    ours_same = min((core(bench.deltas, tick, lot, rows=theirs.deltas) for _ in range(3)), key=lambda run: run.seconds)
    peer_ratio = ours_same.deltas_per_s / theirs.deltas_per_s if theirs.seconds else 0.0
    thin, full = book_rows(2), book_rows(2 * THIN_BOOK_DEPTH)
    thin_over_full = (thin.seconds / thin.messages) / (full.seconds / full.messages) if full.seconds else 0.0
    e2e_over_read = e2e["call_seconds"] / read_only if read_only else 0.0
    book_write = write_seconds(lake_outputs(Path(e2e["output_dir"])))
    book_floor = read_only + book_write
    e2e_over_floor = e2e["call_seconds"] / book_floor if book_floor else 0.0

    # The day as a first run makes it: into a lake and warehouse without what earlier runs derived
    # and stored (the exact skew quantiles beside the day statistics are taken while the deltas
    # and their statistics are unchanged: kept, they spared the checks 0.6-0.8 s).
    forget_outputs(bench.settings)
    graph = run_graph(bench.settings, bench.day, reset=lambda: forget_outputs(bench.settings))
    if graph.exit_code != 0:
        say(f"the whole-graph run exited {graph.exit_code}; see {graph.log}")
    raw_read = min(raw_read_seconds(bench.settings, bench.day) for _ in range(2))
    reads = measure_read_api(bench.settings.data_dir, bench.instrument.key, bench.day) if read_api else {}
    if reads:
        say(
            f"read API: books() {reads['read_books_rows_per_s']:,} rows/s (5 columns, {reads['read_books_rows']:,} rows"
            f" in {reads['read_books_seconds']} s); book_at {reads['read_book_at_per_s']:,} instants/s"
            f" ({reads['read_book_at_instants']:,} in {reads['read_book_at_seconds']} s)"
        )
    graph_over_read = graph.seconds / raw_read if raw_read else 0.0
    inputs = synthetic_day_files(bench.settings.data_dir / "sources" / "synthetic", bench.instrument, bench.day)
    graph_floor_read = read_seconds("crypto_lake", inputs)
    graph_outputs = lake_outputs(bench.settings.lake_dir, bench.day)
    graph_floor_write = write_seconds(graph_outputs)
    graph_floor = graph_floor_read + graph_floor_write
    graph_over_floor = graph.seconds / graph_floor if graph_floor else 0.0
    p_scale = (
        parallel_scale if parallel_scale is not None else min(bench.settings.synthetic.scale, DEFAULT_PARALLEL_SCALE)
    )
    parallel = parallel_speedup(bench.settings.data_dir / "parallel", p_scale, bench.day, say)
    wider = range_memory(bench.settings.data_dir, bench.settings.synthetic.scale, bench.day, say) if ranges else {}
    by_vendor = by_vendor_scale2 = verify = None
    if vendors or vendors_scale2:
        by_vendor, verify = measure_vendors(bench.settings, bench.day, say)
    if vendors_scale2:
        double = bench_settings(bench.settings.data_dir / "scale2", 2 * bench.settings.synthetic.scale)
        generate_days(double, bench.day, bench.day)
        by_vendor_scale2, _ = measure_vendors(double, bench.day, say, verify=False)

    on_bucket = None
    if remote:
        generate_days(bench.settings, bench.day, bench.day + dt.timedelta(days=1))
        scale = bench.settings.synthetic.scale
        on_bucket = measure_remote(bench.settings, bench.day, say, lambda data_dir: bench_settings(data_dir, scale))

    goals = {
        "core_deltas_per_s": core_rate >= GOAL_CORE_DELTAS_PER_S,
        "peer_ratio": peer_ratio >= GOAL_PEER_RATIO,
        "thin_book_over_full": thin_over_full <= GOAL_THIN_OVER_FULL,
        "e2e_over_floor": e2e_over_floor <= GOAL_OVER_FLOOR,
        "graph_over_read": graph.exit_code == 0 and graph_over_read <= GOAL_GRAPH_OVER_READ,
        "graph_over_floor": graph.exit_code == 0 and graph_over_floor <= GOAL_OVER_FLOOR,
        "parallel_speedup": parallel["speedup"] >= GOAL_PARALLEL_SPEEDUP,
        "graph_peak_rss_mb": graph.peak_rss_mb <= GOAL_PEAK_MB,
        **{
            f"graph_peak_rss_mb_{name}": wide.exit_code == 0 and wide.peak_rss_mb <= GOAL_PEAK_MB
            for name, wide in wider.items()
        },
    }
    say(
        f"day: {bench.instrument.key} {bench.day}, profile realistic, scale {bench.settings.synthetic.scale}: "
        f"{deltas:,} deltas in {e2e['messages']:,} messages ({bench.deltas})"
    )
    say(
        f"core: {core_rate / 1e6:.1f} M deltas/s (the production kernel in the rebuild: {kernel_seconds:.2f} s wall; "
        f"a row every 100 ms and at each vendor snapshot, depth {bench.settings.book.depth}, snapshots checked) "
        f"-- goal >= {GOAL_CORE_DELTAS_PER_S / 1e6:.0f} M/s: {_verdict(goals['core_deltas_per_s'])}"
    )
    say(
        f"  the same kernel with a best bid/ask row after every message instead (the peer's work; the core "
        f"as first measured): {bbo.deltas_per_s / 1e6:.1f} M deltas/s over the day ({bbo.seconds:.2f} s)"
    )
    say(
        f"peer: lakeapi OrderBookUpdater {theirs.deltas_per_s / 1e6:.2f} M deltas/s on the first "
        f"{theirs.deltas:,} deltas; our kernel doing the same (best bid/ask after every message) "
        f"{ours_same.deltas_per_s / 1e6:.1f} M/s = {peer_ratio:.0f}x -- goal >= {GOAL_PEER_RATIO:.0f}x: "
        f"{_verdict(goals['peer_ratio'])}"
    )
    say(
        f"thin book: {thin.seconds / thin.messages * 1e9:.0f} ns a {THIN_BOOK_DEPTH}-level row on a book of 2 levels a "
        f"side against {full.seconds / full.messages * 1e9:.0f} ns on one of {2 * THIN_BOOK_DEPTH} "
        f"({thin.messages:,} rows each) = {thin_over_full:.2f}x -- goal <= {GOAL_THIN_OVER_FULL:.0f}x: "
        f"{_verdict(goals['thin_book_over_full'])}"
    )
    say(
        f"book stage: {e2e['call_seconds']:.2f} s for reconstructed_books of the day ({e2e['rows_written']:,} rows, "
        f"{e2e['output_mb']:.0f} MB) vs its floor {book_floor:.2f} s (read what it reads {read_only:.2f} s + write "
        f"its books partition again {book_write:.2f} s) = {e2e_over_floor:.2f}x -- goal <= {GOAL_OVER_FLOOR}x: "
        f"{_verdict(goals['e2e_over_floor'])}"
    )
    if e2e["compiled_first"]:
        say(f"  (its first run compiled {', '.join(e2e['compiled_first'])}: the figures are the second run's)")
    say(f"  over the read alone: {e2e_over_read:.2f}x")
    say(f"  peak RSS of the book stage alone (child process, imports included): {e2e['peak_rss_mb']:.0f} MB")
    say(
        f"  where its time goes (stage: wall s / CPU s; stages overlap on threads, "
        f"process CPU {e2e['process_cpu_seconds']:.2f} s over {e2e['rebuild_seconds']:.2f} s wall):"
    )
    for stage, seconds in e2e["seconds"].items():
        say(f"    {stage:18s} {seconds:7.2f} / {e2e['cpu_seconds'][stage]:6.2f}")
    say("    (read* CPU is spent on Arrow's own threads; wait_* is the main thread blocked on a helper)")
    say(
        f"whole graph: `market-pipeline run` of the day {graph.seconds:.2f} s (exit {graph.exit_code}) vs "
        f"{raw_read:.2f} s to only read the day's raw Parquet = {graph_over_read:.2f}x -- goal <= "
        f"{GOAL_GRAPH_OVER_READ:.0f}x: {_verdict(goals['graph_over_read'])}"
    )
    if graph.compiled_first:
        say(f"  (its first run compiled {', '.join(graph.compiled_first)}: the figures are the second run's)")
    say(
        f"  vs its floor {graph_floor:.2f} s (read the day's {len(inputs)} vendor files {graph_floor_read:.2f} s + "
        f"write the {len(graph_outputs)} lake files it wrote again {graph_floor_write:.2f} s) = "
        f"{graph_over_floor:.2f}x -- goal <= {GOAL_OVER_FLOOR}x: {_verdict(goals['graph_over_floor'])}"
    )
    say(
        f"  peak resident memory of its process tree (PSS summed, sampled every {RSS_SAMPLE_SECONDS} s): "
        f"{graph.peak_rss_mb:.0f} MB "
        f"-- goal <= {GOAL_PEAK_MB:.0f} MB: {_verdict(goals['graph_peak_rss_mb'])}"
    )
    say("  where its time goes (step: wall s, share of the process, peak RSS of the tree during it):")
    outside = graph.seconds - graph.run_seconds
    say(f"    {'(startup, imports, summary)':28s} {outside:7.2f} s {100 * outside / graph.seconds:5.1f}%")
    for step, figures in sorted(graph.steps.items(), key=lambda kv: -kv[1]["seconds"]):
        share = 100 * figures["seconds"] / graph.seconds if graph.seconds else 0.0
        say(f"    {step:28s} {figures['seconds']:7.2f} s {share:5.1f}% {figures['peak_rss_mb']:7.0f} MB")
    say(
        f"parallel: raw and book steps of {len(PARALLEL_INSTRUMENTS)} instruments at scale {p_scale}, run wall: "
        f"{parallel['serial_seconds']:.2f} s with 1 worker, {parallel['parallel_seconds']:.2f} s with 2 = "
        f"{parallel['speedup']:.2f}x -- goal >= {GOAL_PARALLEL_SPEEDUP}x: {_verdict(goals['parallel_speedup'])}"
    )
    ceiling = 1 / parallel["serial_core_use"] if parallel["serial_core_use"] else 0.0
    say(
        f"  cores busy during the run (CPU s over run wall s x {os.cpu_count()} cores): "
        f"{100 * parallel['serial_core_use']:.0f}% "
        f"with 1 worker (an instrument-day's reader and writer threads), "
        f"{100 * parallel['parallel_core_use']:.0f}% with 2; so 2 workers can be at most {ceiling:.2f}x as fast "
        "on these cores (all of them busy, no cost of their own)"
    )
    for name, wide in wider.items():
        say(
            f"whole graph on {name.replace('_', ' ')} (default workers): {wide.seconds:.2f} s (exit {wide.exit_code}), "
            f"peak PSS {wide.peak_rss_mb:.0f} MB -- goal <= {GOAL_PEAK_MB:.0f} MB: "
            f"{_verdict(goals[f'graph_peak_rss_mb_{name}'])}"
        )
    if not wider:
        say("whole graph on two instruments and on three days: not measured (--ranges measures them)")
    vendor_figures: dict = {}
    if by_vendor is not None:
        met, vendor_figures = vendor_report(by_vendor, by_vendor_scale2, verify, say)
        goals.update(met)
    else:
        say("vendors: the whole graph from Crypto Lake, Tardis and capture files not measured (--vendors measures it)")
    remote_figures: dict = {}
    if on_bucket is not None:
        remote_figures = remote_report(on_bucket, say)
        goals["remote_over_local"] = on_bucket.met
    load = os.getloadavg()[0]
    say(f"machine: {os.cpu_count()} CPUs, load average {load:.1f} at the end")
    return {
        "deltas": deltas,
        "core_deltas_per_s": round(core_rate),
        "core_bbo_deltas_per_s": round(bbo.deltas_per_s),
        "peer_deltas_per_s": round(theirs.deltas_per_s),
        "peer_ratio": round(peer_ratio, 1),
        "thin_book_row_ns": round(thin.seconds / thin.messages * 1e9),
        "full_book_row_ns": round(full.seconds / full.messages * 1e9),
        "thin_book_over_full": thin_over_full,
        # Unrounded: the ratio is checkable against its parts on a day of any size (rounded to the
        # millisecond, a tiny day's read of ~20 ms would be off by percents).
        "e2e_seconds": e2e["call_seconds"],
        "e2e_compiled_first": e2e["compiled_first"],
        "read_only_seconds": read_only,
        "e2e_over_read": e2e_over_read,
        "book_floor_seconds": book_floor,
        "book_floor_write_seconds": book_write,
        "e2e_over_floor": e2e_over_floor,
        "peak_rss_mb": round(e2e["peak_rss_mb"], 1),
        "graph_seconds": round(graph.seconds, 3),
        "graph_run_seconds": round(graph.run_seconds, 3),
        "graph_exit_code": graph.exit_code,
        "raw_read_seconds": round(raw_read, 3),
        "graph_over_read": round(graph_over_read, 3),
        "graph_floor_seconds": round(graph_floor, 3),
        "graph_floor_read_seconds": round(graph_floor_read, 3),
        "graph_floor_write_seconds": round(graph_floor_write, 3),
        "graph_floor_outputs": len(graph_outputs),
        "graph_over_floor": round(graph_over_floor, 3),
        "graph_peak_rss_mb": round(graph.peak_rss_mb, 1),
        "graph_stage_seconds": {step: f["seconds"] for step, f in graph.steps.items()},
        "graph_stage_peak_rss_mb": {step: f["peak_rss_mb"] for step, f in graph.steps.items()},
        **{f"graph_peak_rss_mb_{name}": round(wide.peak_rss_mb, 1) for name, wide in wider.items()},
        **{f"graph_seconds_{name}": round(wide.seconds, 3) for name, wide in wider.items()},
        "parallel_speedup": round(parallel["speedup"], 3),
        "parallel_scale": p_scale,
        "parallel_instruments": len(PARALLEL_INSTRUMENTS),
        "parallel_serial_seconds": parallel["serial_seconds"],
        "parallel_seconds": parallel["parallel_seconds"],
        "parallel_serial_core_use": parallel["serial_core_use"],
        "parallel_core_use": parallel["parallel_core_use"],
        "messages": e2e["messages"],
        "core_seconds": round(kernel_seconds, 3),
        "core_cpu_seconds": round(e2e["cpu_seconds"].get("kernel", 0.0), 3),
        "peer_rows": theirs.deltas,
        "core_deltas_per_s_on_peer_rows": round(ours_same.deltas_per_s),
        "e2e_process_cpu_seconds": e2e["process_cpu_seconds"],
        "e2e_stage_seconds": e2e["seconds"],
        "e2e_stage_cpu_seconds": e2e["cpu_seconds"],
        "rows_written": e2e["rows_written"],
        "vendor_snapshots_matched": e2e["vendor_snapshots_matched"],
        "vendor_snapshots": e2e["vendor_snapshots"],
        **vendor_figures,
        **remote_figures,
        **reads,
        "goals_met": goals,
        "scale": bench.settings.synthetic.scale,
        "cpus": os.cpu_count(),
        "load_average": round(load, 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m market_pipeline.bench", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--scale",
        type=float,
        default=1.0,
        help="multiplies the realistic day's ~34 M deltas (default 1; e.g. 0.05 for a quick look)",
    )
    parser.add_argument(
        "--peer-rows",
        type=int,
        default=DEFAULT_PEER_ROWS,
        help="deltas given to the vendor's rebuilder (default %(default)s)",
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=Path(os.environ.get("PIPELINE_DATA_DIR") or DEFAULT_DATA_DIR),
        help="where the day is generated and rebuilt ($PIPELINE_DATA_DIR, else data/bench)",
    )
    parser.add_argument(
        "--parallel-scale",
        type=float,
        default=None,
        help=f"scale of the two-instrument parallel figure (default: --scale, at most {DEFAULT_PARALLEL_SCALE})",
    )
    parser.add_argument(
        "--ranges",
        action="store_true",
        help=f"also run the whole graph on two instruments and on {RANGE_DAYS} days (peak memory; ~3 min more)",
    )
    parser.add_argument(
        "--vendors",
        action="store_true",
        help="also run the whole graph from the day written as Crypto Lake, Tardis and capture files, against "
        "each vendor's floor, and time verify-capture (four more whole-graph runs: 1-5 min each at scale 1)",
    )
    parser.add_argument(
        "--vendors-scale2",
        action="store_true",
        help="--vendors, and the four vendor runs again on a day twice as large (is peak memory flat?)",
    )
    parser.add_argument(
        "--read-api",
        action="store_true",
        help="also time the research read API on the day's books: books() with 5 columns, book_at for 1 M instants",
    )
    parser.add_argument(
        "--remote",
        action="store_true",
        help="also run the whole graph over two days with the lake on a loopback S3 bucket and on local disk "
        "(two more whole-graph runs): both walls, their ratio and the lake objects each step fetched",
    )
    args = parser.parse_args(argv)
    quiet_dagster()
    settings = bench_settings(args.data_dir, args.scale)
    started = time.perf_counter()
    bench = prepare_day(settings)
    print(f"day ready in {time.perf_counter() - started:.1f} s (cached under {settings.data_dir})", flush=True)
    # The figures are for the production defaults (100 ms each) unless PIPELINE_* variables say otherwise.
    print(
        f"vendor snapshots every {settings.synthetic.snapshot_interval_ms} ms, "
        f"book rows sampled every {settings.book.sample_interval_ms} ms",
        flush=True,
    )
    report = run(
        bench,
        args.peer_rows,
        args.parallel_scale,
        say=lambda line: print(line, flush=True),
        ranges=args.ranges,
        vendors=args.vendors,
        vendors_scale2=args.vendors_scale2,
        read_api=args.read_api,
        remote=args.remote,
    )
    print(json.dumps(report, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    sys.exit(main())

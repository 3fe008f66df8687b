"""`make bench`: how fast the book rebuild is on one realistic synthetic instrument-day.

Run as `python -m market_pipeline.bench [--scale S] [--peer-rows N]`. It builds (once, cached
by the synthetic source's fingerprint) a `profile=realistic` day of one instrument, imports it
into the raw lake (again only when the generated day changed), then measures in one run:

- read only: the raw delta and snapshot Parquet columns the rebuild reads, in the same batches
  and on two threads as the rebuild does, and nothing else (best of two runs);
- end to end: `book.assets.rebuild_instrument_day` (read, convert, replay, build the decimal
  output, write books, agreement and checkpoint) in a child process, so its peak RSS is its
  own; the time is the call, imports excluded, loading numba's cached machine code included;
- core: the production kernel `delta_replay.replay_lake_batch` over the whole day's int64
  arrays, a row with the best bid/ask written after every message (interval 0, depth 1, no
  vendor snapshots), compile excluded;
- peer: the vendor's `lakeapi.orderbook.OrderBookUpdater` on the first `--peer-rows` deltas,
  best bid/ask read after every message, against our core on the same rows.

Human-readable figures go first; the last line is one JSON object.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import multiprocessing as mp
import os
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from market_pipeline.core.book import delta_replay as lr
from market_pipeline.core.book.fixed_point import to_steps
from market_pipeline.core.book.ladder import new_book
from market_pipeline.core.book.rebuild import DELTA_BATCH_ROWS, DELTA_COLUMNS, SNAPSHOT_BATCH_ROWS
from market_pipeline.core.instruments import Instrument
from market_pipeline.core.lake.paths import PARTITION_FILE, raw_partition_dir
from market_pipeline.core.telemetry.memory import peak_rss_bytes
from market_pipeline.settings import PipelineSettings, load_settings

BENCH_INSTRUMENT = "BINANCE:BTC-USDT"
BENCH_DAY = dt.date(2024, 3, 1)
DEFAULT_DATA_DIR = Path("data/bench")
DEFAULT_PEER_ROWS = 3_000_000
CORE_CHUNK_ROWS = 4_000_000  # bounds the bench's own memory; the kernel runs on whole messages
KERNEL_COLUMNS = ["received_time", "sequence_number", "side_is_bid", "price", "size"]
# The goals of the book-rebuild issue (issue 3, item 8).
GOAL_CORE_DELTAS_PER_S = 50e6
GOAL_PEER_RATIO = 100.0
GOAL_E2E_OVER_READ = 1.5
GOAL_PEAK_RSS_MB = 1024.0


@dataclass(frozen=True)
class BenchDay:
    settings: PipelineSettings
    instrument: Instrument
    day: dt.date
    deltas: Path
    book: Path


@dataclass(frozen=True)
class CoreRun:
    deltas: int
    messages: int
    seconds: float

    @property
    def deltas_per_s(self) -> float:
        return self.deltas / self.seconds if self.seconds else 0.0


def bench_settings(data_dir: Path, scale: float) -> PipelineSettings:
    return load_settings(
        data_dir=data_dir,
        source="synthetic",
        instruments=[BENCH_INSTRUMENT],
        synthetic={"profile": "realistic", "scale": scale},
    )


def prepare_day(settings: PipelineSettings, day: dt.date = BENCH_DAY) -> BenchDay:
    """Generate the synthetic day unless cached, and import its deltas and snapshots into the raw lake."""
    from market_pipeline.defs.raw.importer import import_partition
    from market_pipeline.vendors.synthetic.source import SyntheticSource

    (instrument,) = settings.universe
    source = SyntheticSource(settings.synthetic, settings.data_dir / "sources" / "synthetic")
    stamp = source.ensure_day(instrument, day) / "params.sha256"  # rewritten only on regeneration
    paths = {}
    for table in ("book_delta_v2", "book"):
        target = raw_partition_dir(settings.lake_dir, table, instrument.exchange, instrument.symbol, day)
        target = target / PARTITION_FILE
        if not target.is_file() or target.stat().st_mtime < stamp.stat().st_mtime:
            print(f"importing {table} into the raw lake ...", flush=True)
            import_partition(source, settings, table, instrument, day, run_id="bench")
        paths[table] = target
    return BenchDay(settings, instrument, day, paths["book_delta_v2"], paths["book"])


def read_only_seconds(bench: BenchDay) -> float:
    """Read what the rebuild reads, as it reads it (two threads, same batches), and nothing more."""

    def drain(path: Path, batch_size: int, columns: list[str] | None) -> None:
        for _ in pq.ParquetFile(path, pre_buffer=False).iter_batches(batch_size=batch_size, columns=columns):
            pass

    started = time.perf_counter()
    with ThreadPoolExecutor(2) as pool:
        jobs = [
            pool.submit(drain, bench.deltas, DELTA_BATCH_ROWS, DELTA_COLUMNS),
            pool.submit(drain, bench.book, SNAPSHOT_BATCH_ROWS, None),
        ]
        for job in jobs:
            job.result()
    return time.perf_counter() - started


def _quiet_dagster() -> None:
    """Hide Dagster's Beta/Preview notices (about APIs the pipeline chose) from the report."""
    import dagster as dg

    warnings.filterwarnings("ignore", category=dg.BetaWarning)
    warnings.filterwarnings("ignore", category=dg.PreviewWarning)


def _e2e_child(data_dir: str, scale: float, day: str, conn) -> None:
    """In a fresh process: one `reconstructed_books` instrument-day, reported through `conn`."""
    _quiet_dagster()
    from market_pipeline.defs.books.assets import rebuild_instrument_day
    from market_pipeline.vendors.registry import build_source

    settings = bench_settings(Path(data_dir), scale)
    (instrument,) = settings.universe
    source = build_source(settings)
    started = time.perf_counter()
    result = rebuild_instrument_day(source, settings, instrument, dt.date.fromisoformat(day)).result
    seconds = time.perf_counter() - started
    conn.send(
        {
            **result.extra,  # seconds and cpu_seconds per stage, process_cpu_seconds
            "call_seconds": seconds,
            "rebuild_seconds": result.seconds,
            # VmHWM: unlike ru_maxrss it does not inherit the parent's peak through fork and exec.
            "peak_rss_mb": peak_rss_bytes() / 2**20,
            "rows_in": result.rows_in,
            "rows_written": result.counters["rows_written"],
            "vendor_snapshots_matched": result.counters["vendor_snapshots_matched"],
            "vendor_snapshots": result.counters["vendor_snapshots"],
            "output_mb": result.output.stat().st_size / 2**20,
        }
    )
    conn.close()


def end_to_end(bench: BenchDay) -> dict:
    ctx = mp.get_context("spawn")  # a clean interpreter: the peak RSS is the rebuild's alone
    receiver, sender = ctx.Pipe(duplex=False)
    child = ctx.Process(
        target=_e2e_child,
        args=(str(bench.settings.data_dir), bench.settings.synthetic.scale, bench.day.isoformat(), sender),
    )
    child.start()
    sender.close()
    try:
        report = receiver.recv()
    except EOFError:
        report = None
    child.join()
    if report is None or child.exitcode != 0:
        raise RuntimeError(f"end-to-end rebuild child failed (exit code {child.exitcode})")
    return report


def _kernel_chunks(path: Path, tick: float, lot: float, rows: int | None) -> Iterator[tuple[np.ndarray, ...]]:
    """The deltas as int64 kernel arrays, in chunks cut only between messages; `rows` limits them."""
    off_grid = np.empty(1, np.int64)
    carry: tuple[np.ndarray, ...] | None = None
    taken = 0
    file = pq.ParquetFile(path, pre_buffer=False)  # pre-buffering would keep every chunk read
    for batch in file.iter_batches(batch_size=CORE_CHUNK_ROWS, columns=KERNEL_COLUMNS):
        if rows is not None:
            batch = batch.slice(0, rows - taken)
        taken += batch.num_rows
        # Writable copies, so every chunk has the one array type numba compiled for.
        recv, seq, is_bid, price, size = (
            batch.column(c).to_numpy(zero_copy_only=False, writable=True) for c in KERNEL_COLUMNS
        )
        chunk = (recv, seq, is_bid, to_steps(price, tick, off_grid, 1)[0], to_steps(size, lot, off_grid, 1)[0])
        if carry is not None:
            chunk = tuple(np.concatenate([a, b]) for a, b in zip(carry, chunk, strict=True))
        last_start = _last_message_start(chunk[0], chunk[1])
        carry = tuple(a[last_start:] for a in chunk)
        if last_start:
            yield tuple(a[:last_start] for a in chunk)
        if rows is not None and taken >= rows:
            break
    if carry is not None and len(carry[0]):
        yield carry


def _last_message_start(recv: np.ndarray, seq: np.ndarray) -> int:
    """Index of the first row of the last message (rows sharing received_time and sequence_number)."""
    differs = (recv[1:] != recv[:-1]) | (seq[1:] != seq[:-1])
    starts = np.flatnonzero(differs)
    return int(starts[-1]) + 1 if len(starts) else 0


class _CoreReplay:
    """The production kernel set up as the core measures it: a row (best bid and ask) after
    every message, no vendor snapshots; the state carries over from chunk to chunk."""

    def __init__(self) -> None:
        self.book = new_book()
        self.state = lr.new_replay_state(0, False, 0, True)
        self.counters = lr.new_counters()
        self.hourly = lr.new_hourly()
        self.snaps = lr.Snapshots(
            *(np.empty(0, np.int64) for _ in range(3)), *(np.empty((0, 1), np.int64) for _ in range(4))
        )
        self.agreement = lr.new_agreement(0)
        self.work = lr.new_levels(1)
        self.rows: lr.Rows | None = None

    def chunk(self, recv, seq, is_bid, ticks, lots) -> tuple[lr.Deltas, lr.Rows]:
        """Kernel inputs for a chunk of whole messages (the output holds a row per delta at most)."""
        if self.rows is None or self.rows.recv.shape[0] < len(recv):
            self.rows = lr.new_rows(len(recv), 1)
        return lr.Deltas(recv, recv, seq, is_bid, ticks, lots, lr.no_snapshot_flags(len(recv))), self.rows

    def run(self, deltas: lr.Deltas, rows: lr.Rows) -> int:
        """Replay the chunk; returns its messages (one row each)."""
        i, _, n_out = lr.replay_lake_batch(
            deltas,
            self.snaps,
            self.book,
            self.state,
            self.counters,
            self.hourly,
            rows,
            self.agreement,
            self.work,
            1,
            True,
            True,
        )
        assert i == len(deltas.recv)
        return n_out


def core(path: Path, tick: float, lot: float, rows: int | None = None) -> CoreRun:
    """replay_lake_batch over the deltas, best bid/ask after every message; only the kernel is timed."""
    warm = _CoreReplay()
    warm.run(*warm.chunk(*next(_kernel_chunks(path, tick, lot, 10_000))))  # compile or load
    replay = _CoreReplay()
    deltas = messages = 0
    seconds = 0.0
    for chunk in _kernel_chunks(path, tick, lot, rows):
        inputs = replay.chunk(*chunk)
        started = time.perf_counter()
        messages += replay.run(*inputs)
        seconds += time.perf_counter() - started
        deltas += len(chunk[0])
    return CoreRun(deltas, messages, seconds)


def peer(path: Path, rows: int) -> CoreRun:
    """The vendor's rebuilder on the first `rows` deltas, reading best bid/ask after each message."""
    import pyarrow as pa
    from lakeapi.orderbook import OrderBookUpdater

    file = pq.ParquetFile(path)
    head = pa.Table.from_batches([next(file.iter_batches(batch_size=rows, columns=DELTA_COLUMNS))]).to_pandas()
    warm = OrderBookUpdater(head.head(10_000))  # its numba code compiles on first use
    for _ in range(100):
        warm.process_next_update()
        warm.get_bests()
    updater = OrderBookUpdater(head)
    n = len(head)
    messages = 0
    started = time.perf_counter()
    while updater.current_index < n:
        updater.process_next_update()
        updater.get_bests()
        messages += 1
    return CoreRun(n, messages, time.perf_counter() - started)


def _verdict(met: bool) -> str:
    return "met" if met else "NOT met"


def run(bench: BenchDay, peer_rows: int, say: Callable[[str], None] = print) -> dict:
    """Every measurement on one prepared day; `say` gets the human-readable lines."""
    grid = bench.instrument
    tick, lot = float(grid.tick_size), float(grid.lot_size)
    read_first = read_only_seconds(bench)
    e2e = end_to_end(bench)
    read_only = min(read_first, read_only_seconds(bench))
    whole = core(bench.deltas, tick, lot)
    theirs = peer(bench.deltas, peer_rows)
    ours_same = core(bench.deltas, tick, lot, rows=theirs.deltas)
    peer_ratio = ours_same.deltas_per_s / theirs.deltas_per_s if theirs.seconds else 0.0
    e2e_over_read = e2e["call_seconds"] / read_only if read_only else 0.0
    goals = {
        "core_deltas_per_s": whole.deltas_per_s >= GOAL_CORE_DELTAS_PER_S,
        "peer_ratio": peer_ratio >= GOAL_PEER_RATIO,
        "e2e_over_read": e2e_over_read <= GOAL_E2E_OVER_READ,
        "peak_rss_mb": e2e["peak_rss_mb"] <= GOAL_PEAK_RSS_MB,
    }
    say(
        f"day: {bench.instrument.key} {bench.day}, profile realistic, scale {bench.settings.synthetic.scale}: "
        f"{whole.deltas:,} deltas in {whole.messages:,} messages ({bench.deltas})"
    )
    say(
        f"core: {whole.deltas_per_s / 1e6:.1f} M deltas/s ({whole.seconds:.2f} s, best bid/ask after every "
        f"message) -- goal >= {GOAL_CORE_DELTAS_PER_S / 1e6:.0f} M/s: {_verdict(goals['core_deltas_per_s'])}"
    )
    say(
        f"peer: lakeapi OrderBookUpdater {theirs.deltas_per_s / 1e6:.2f} M deltas/s on the first "
        f"{theirs.deltas:,} deltas; ours on the same rows {ours_same.deltas_per_s / 1e6:.1f} M/s = "
        f"{peer_ratio:.0f}x -- goal >= {GOAL_PEER_RATIO:.0f}x: {_verdict(goals['peer_ratio'])}"
    )
    say(
        f"end to end: {e2e['call_seconds']:.2f} s for reconstructed_books of the day ({e2e['rows_written']:,} rows, "
        f"{e2e['output_mb']:.0f} MB) vs {read_only:.2f} s to only read its Parquet columns = "
        f"{e2e_over_read:.2f}x -- goal <= {GOAL_E2E_OVER_READ}x: {_verdict(goals['e2e_over_read'])}"
    )
    say(
        f"peak RSS of the end-to-end rebuild (child process, imports included): {e2e['peak_rss_mb']:.0f} MB "
        f"-- goal <= {GOAL_PEAK_RSS_MB:.0f} MB: {_verdict(goals['peak_rss_mb'])}"
    )
    say(
        f"where the end-to-end time goes (stage: wall s / CPU s; stages overlap on threads, "
        f"process CPU {e2e['process_cpu_seconds']:.2f} s over {e2e['rebuild_seconds']:.2f} s wall):"
    )
    for stage, seconds in e2e["seconds"].items():
        say(f"  {stage:18s} {seconds:7.2f} / {e2e['cpu_seconds'][stage]:6.2f}")
    say("  (read* CPU is spent on Arrow's own threads; wait_* is the main thread blocked on a helper)")
    load = os.getloadavg()[0]
    say(f"machine: {os.cpu_count()} CPUs, load average {load:.1f} at the end")
    return {
        "deltas": whole.deltas,
        "core_deltas_per_s": round(whole.deltas_per_s),
        "peer_deltas_per_s": round(theirs.deltas_per_s),
        "peer_ratio": round(peer_ratio, 1),
        "e2e_seconds": round(e2e["call_seconds"], 3),
        "read_only_seconds": round(read_only, 3),
        "e2e_over_read": round(e2e_over_read, 3),
        "peak_rss_mb": round(e2e["peak_rss_mb"], 1),
        "messages": whole.messages,
        "core_seconds": round(whole.seconds, 3),
        "peer_rows": theirs.deltas,
        "core_deltas_per_s_on_peer_rows": round(ours_same.deltas_per_s),
        "e2e_process_cpu_seconds": e2e["process_cpu_seconds"],
        "e2e_stage_seconds": e2e["seconds"],
        "e2e_stage_cpu_seconds": e2e["cpu_seconds"],
        "rows_written": e2e["rows_written"],
        "vendor_snapshots_matched": e2e["vendor_snapshots_matched"],
        "vendor_snapshots": e2e["vendor_snapshots"],
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
    args = parser.parse_args(argv)
    _quiet_dagster()
    settings = bench_settings(args.data_dir, args.scale)
    started = time.perf_counter()
    bench = prepare_day(settings)
    print(f"day ready in {time.perf_counter() - started:.1f} s (cached under {settings.data_dir})", flush=True)
    report = run(bench, args.peer_rows, say=lambda line: print(line, flush=True))
    print(json.dumps(report, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    sys.exit(main())

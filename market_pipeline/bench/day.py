"""The bench day and what is measured on it alone: its settings, its generation and import into
the raw lake (cached), the read floors (what the rebuild reads, every raw file of the day) and the
end-to-end rebuild of the instrument-day in a child process of its own."""

from __future__ import annotations

import datetime as dt
import multiprocessing as mp
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from market_pipeline.bench.floors import read_seconds
from market_pipeline.bench.graph import cached_kernels, compiled_kernels, quiet_dagster
from market_pipeline.core.book.rebuild import DELTA_BATCH_ROWS, DELTA_COLUMNS, SNAPSHOT_BATCH_ROWS
from market_pipeline.core.instruments import Instrument
from market_pipeline.core.lake import parquet_io
from market_pipeline.core.lake.paths import PARTITION_FILE, raw_partition_dir
from market_pipeline.core.telemetry.memory import peak_rss_bytes
from market_pipeline.settings import PipelineSettings, load_settings

BENCH_INSTRUMENT = "BINANCE:BTC-USDT"
BENCH_DAY = dt.date(2024, 3, 1)


@dataclass(frozen=True)
class BenchDay:
    settings: PipelineSettings
    instrument: Instrument
    day: dt.date
    deltas: Path
    book: Path


def bench_settings(data_dir: Path, scale: float, instruments: list[str] | None = None) -> PipelineSettings:
    return load_settings(
        data_dir=data_dir,
        source="synthetic",
        instruments=instruments or [BENCH_INSTRUMENT],
        synthetic={"profile": "realistic", "scale": scale},
    )


def prepare_day(settings: PipelineSettings, day: dt.date = BENCH_DAY) -> BenchDay:
    """Generate the synthetic day unless cached, and import its deltas and snapshots into the raw lake."""
    from market_pipeline.defs.common.importer import import_partition
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
        for _ in parquet_io.open_file(path, pre_buffer=False).iter_batches(batch_size=batch_size, columns=columns):
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


def raw_read_seconds(settings: PipelineSettings, day: dt.date) -> float:
    """Read every raw Parquet file of the day, all columns (the floor of the whole graph)."""
    files = sorted((settings.lake_dir / "raw").glob(f"*/*/*/dt={day.isoformat()}/*.parquet"))
    return read_seconds("crypto_lake", files)


def _e2e_child(data_dir: str, scale: float, day: str, conn) -> None:
    """In a fresh process: one `reconstructed_books` instrument-day, reported through `conn`."""
    quiet_dagster()
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
            "messages": result.counters.get("messages", 0),
            "rows_written": result.counters["rows_written"],
            "vendor_snapshots_matched": result.counters["vendor_snapshots_matched"],
            "vendor_snapshots": result.counters["vendor_snapshots"],
            "output_mb": result.output.stat().st_size / 2**20,
            "output_dir": str(result.output.parent),  # the books partition: the stage floor's write
        }
    )
    conn.close()


def end_to_end(bench: BenchDay) -> dict:
    """The book stage of the day in a fresh process (`_e2e_child`'s report). A run that compiled
    kernels (the first after a kernel source changed: the replay kernel alone took about 30 s here,
    timed as the kernel stage) is run again and the second measured; `compiled_first` names them."""
    before = cached_kernels()
    report = _end_to_end_once(bench)
    compiled = compiled_kernels(before)
    if compiled:
        report = _end_to_end_once(bench)
    return {**report, "compiled_first": compiled}


def _end_to_end_once(bench: BenchDay) -> dict:
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


def generate_days(settings: PipelineSettings, first: dt.date, last: dt.date) -> None:
    """The synthetic days first..last of `settings`' instruments, generated before anything is
    measured (cached: only missing or changed days are generated)."""
    from market_pipeline.vendors.synthetic.source import SyntheticSource

    source = SyntheticSource(settings.synthetic, settings.data_dir / "sources" / "synthetic")
    for instrument in settings.universe:
        for offset in range((last - first).days + 1):
            source.ensure_day(instrument, first + dt.timedelta(days=offset))

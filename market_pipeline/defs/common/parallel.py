"""Instrument-days of one step on `PIPELINE_WORKERS` processes (`settings.workers`).

`run_tasks(settings, fn, tasks)` calls `fn(source, settings, *task)` for every task and returns
the results in the order of `tasks`, whatever order they finish in, so a step records metadata,
logs and metrics exactly as a serial run does. With one worker (or one task) the calls run in
the step's own process. Otherwise the step's own process is one of the workers and the others
are a `ProcessPoolExecutor` started with `forkserver` (`spawn` where that does not exist): forking
a Dagster step process, with its threads and numba, is unsafe. Each worker process builds the
vendor source once from the (picklable) settings.
As with any `spawn`/`forkserver` pool, a script that runs a step directly must guard its entry
point with `if __name__ == "__main__":` (workers import the main module); Dagster's and the CLI's
entry points do.

Metrics a task records in a worker (counters, histograms, gauges, `measure_stage`) would stay in
that process, whose exporter is not configured: the worker records them into a list instead
(its core context's `metrics_sink`), returned with the result, and the parent records them
(`Outcome.replay`) so they reach the step's metrics as if recorded there. A worker reads the lake
through its step's local copies (`local_copies`) and its requests to the bucket are added to the
step's (`Outcome.requests`, when the results arrive). Progress updates
(`core/telemetry/progress.py`) travel the other way while the tasks run: when someone watches this
process, the workers put theirs into a queue that a thread of this process drains.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import sys
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from typing import Any

from market_pipeline.core import context
from market_pipeline.core.cpu_limit import usable_cores
from market_pipeline.core.lake import local_copies
from market_pipeline.core.telemetry import progress, telemetry
from market_pipeline.core.telemetry.memory import release_free_memory
from market_pipeline.defs.common.resources import lake_context
from market_pipeline.settings import PipelineSettings
from market_pipeline.vendors.base import VendorSource
from market_pipeline.vendors.registry import build_source

_PRELOADED_PACKAGES = ("market_pipeline.core.", "market_pipeline.vendors.", "market_pipeline.defs.")
_WARMUP_MODULE = "market_pipeline.defs.common.worker_warmup"


# Cores one instrument-day keeps busy on its own: the import checks on the main thread while
# helper threads read and encode; the rebuild reads, replays and writes on four threads (1.3 to
# 1.6 cores measured). On a 2-core box a second worker made two realistic instruments' books take
# 32 s instead of 16 s one after the other, and the run's memory 1.86 GB instead of 1.0 GB.
CORES_PER_INSTRUMENT_DAY = 2


def worker_count(settings: PipelineSettings, tasks: int) -> int:
    """Processes for `tasks` instrument-days, at most one per task: `settings.workers`, by default
    one per `CORES_PER_INSTRUMENT_DAY` usable cores (the CPU affinity, narrowed by a container's
    CPU quota)."""
    wanted = settings.workers if settings.workers is not None else usable_cores() // CORES_PER_INSTRUMENT_DAY
    return max(1, min(wanted, tasks))


@dataclass
class Outcome:
    """One task's return value, and the metrics it recorded in a worker process."""

    value: Any
    recorded: list[telemetry.Recorded] = field(default_factory=list)
    requests: local_copies.RequestCounts = local_copies.RequestCounts()  # to the lake's bucket, in a worker

    def replay(self) -> None:
        """Record the worker's metrics in this process (nothing for a task run in-process)."""
        telemetry.replay(self.recorded)
        self.recorded = []


_worker_source: VendorSource | None = None
_worker_settings: PipelineSettings | None = None
_worker_sink: list[telemetry.Recorded] = []
_worker_context: context.CoreContext | None = None


def _init_worker(settings: PipelineSettings, progress_updates: Any, copies: local_copies.Copies | None) -> None:
    global _worker_source, _worker_settings, _worker_context
    os.environ.setdefault("NUMBA_NUM_THREADS", "1")
    _worker_context = replace(
        lake_context(settings),
        lake_copies=copies,
        metrics_sink=_worker_sink,  # the parent exports
        progress_sink=progress.queue_sink(progress_updates) if progress_updates is not None else None,
    )
    _worker_settings = settings
    with context.using(_worker_context):
        _worker_source = build_source(settings)


def _run_in_worker(fn: Callable[..., Any], task: tuple[Any, ...]) -> Outcome:
    assert _worker_source is not None and _worker_settings is not None and _worker_context is not None
    _worker_sink.clear()
    before = local_copies.request_counts()
    with context.using(_worker_context):
        value = _run_task(fn, _worker_source, _worker_settings, task)
    return Outcome(value, list(_worker_sink), local_copies.request_counts() - before)


def _worker_ready() -> None:
    """Returns once the worker process has started and built its source (`_init_worker`)."""


def _run_task(fn: Callable[..., Any], source: VendorSource, settings: PipelineSettings, task: tuple[Any, ...]) -> Any:
    """One instrument-day; then the memory it freed goes back to the OS, so that a run's peak
    does not grow with the instrument-days a process works through."""
    try:
        return fn(source, settings, *task)
    finally:
        release_free_memory()


def _context() -> mp.context.BaseContext:
    if "forkserver" not in mp.get_all_start_methods():
        return mp.get_context("spawn")
    context = mp.get_context("forkserver")
    # The server imports the pipeline code this process has loaded (Dagster, Arrow, polars, numba
    # and the stages come with it) once; every worker forks from it ready instead of importing it
    # all again, which took longer than a small instrument-day's work. It only takes effect when
    # the server starts, at the first pool of the process. `worker_warmup` loads there what every
    # worker would otherwise load for itself (numba's code generator, pyarrow's pandas).
    preload = sorted(name for name in sys.modules if name.startswith(_PRELOADED_PACKAGES))
    context.set_forkserver_preload([*preload, _WARMUP_MODULE])
    return context


def start_workers_early(settings: PipelineSettings, tasks: int) -> threading.Thread | None:
    """Start the workers' fork server now, on a thread, when a step of `tasks` instrument-days
    would start it (more than one worker): its imports of the pipeline (about 2.5 s) then overlap
    what comes before the run's first step (opening the instance, planning the run) instead of
    holding the first step's worker processes back. The server preloads the modules loaded by now,
    the vendor's among them (loaded when a source is first built). Returns the thread, or None
    when no step would start a server."""
    if worker_count(settings, tasks) == 1 or "forkserver" not in mp.get_all_start_methods():
        return None
    try:
        build_source(settings)
    except Exception:  # a source that cannot be built fails the run's steps, which say why
        return None
    processes = _context()

    def start() -> None:
        process = processes.Process(target=_worker_ready, name="fork-server-start")
        process.start()
        process.join()

    thread = threading.Thread(target=start, name="fork-server-start", daemon=True)
    thread.start()
    return thread


def run_tasks(
    settings: PipelineSettings,
    fn: Callable[..., Any],
    tasks: Sequence[tuple[Any, ...]],
    source: VendorSource | None = None,
) -> list[Outcome]:
    """`fn(source, settings, *task)` for every task, in parallel when allowed; results in task order.

    `fn` must be a module-level function and tasks and results picklable. `source` is the
    in-process source for the tasks the step's own process runs (built from `settings` when not
    given).

    With N workers the step's own process is one of them: it takes the next task whenever it is
    free, as each of N - 1 worker processes does once it is up. So the tasks start at once, while
    the fork server imports the pipeline (about 2.5 s at a run's first pool, longer than a small
    instrument-day takes), and the run holds one process fewer.
    """
    workers = worker_count(settings, len(tasks))
    source = source if source is not None else build_source(settings)
    if workers == 1:
        return [Outcome(_run_task(fn, source, settings, task)) for task in tasks]
    processes = _context()
    updates = processes.Queue() if progress.watched() else None
    queue = _TaskQueue(len(tasks))
    outcomes: list[Outcome | None] = [None] * len(tasks)
    with (
        ProcessPoolExecutor(
            max_workers=workers - 1,
            mp_context=processes,
            initializer=_init_worker,
            initargs=(settings, updates, local_copies.current_copies()),
        ) as pool,
        progress.drain(updates) if updates is not None else nullcontext(),
        ThreadPoolExecutor(workers - 1, thread_name_prefix="worker-lane") as lanes,
    ):

        def lane() -> None:
            """Once a worker process is up, hand it the next task, one at a time, until none is
            left. Until then the step's process takes them all: a run's first pool waits for the
            fork server to import the pipeline, longer than a small instrument-day takes."""
            try:
                pool.submit(_worker_ready).result()
            except BaseException as exc:  # the worker could not start
                queue.failed(-1, exc)
                return
            while (index := queue.take()) is not None:
                try:
                    outcomes[index] = pool.submit(_run_in_worker, fn, tasks[index]).result()
                except BaseException as exc:
                    queue.failed(index, exc)

        running = [lanes.submit(lane) for _ in range(workers - 1)]
        while (index := queue.take()) is not None:
            # Its metrics are kept like a worker's, so the caller records every task's in task order.
            recorded: list[telemetry.Recorded] = []
            try:
                with context.using_changes(metrics_sink=recorded):
                    outcomes[index] = Outcome(_run_task(fn, source, settings, tasks[index]), recorded)
            except BaseException as exc:
                queue.failed(index, exc)
        for lane_done in running:
            lane_done.result()
    queue.raise_first_failure()
    finished = [outcome for outcome in outcomes if outcome is not None]
    assert len(finished) == len(tasks)  # no task failed, so every one has its outcome
    for outcome in finished:
        local_copies.add_request_counts(outcome.requests)
    return finished


class _TaskQueue:
    """Task indexes in order, taken by the step's process and the lanes to the workers; after a
    failure no more are given out, and the failure of the earliest task is the one raised (as a
    serial run would have raised it, had it got that far; a worker that could not start, -1,
    before any)."""

    def __init__(self, count: int) -> None:
        self._next = 0
        self._count = count
        self._lock = threading.Lock()
        self._failures: dict[int, BaseException] = {}

    def take(self) -> int | None:
        with self._lock:
            if self._failures or self._next == self._count:
                return None
            self._next += 1
            return self._next - 1

    def failed(self, index: int, exc: BaseException) -> None:
        with self._lock:
            self._failures[index] = exc

    def raise_first_failure(self) -> None:
        if self._failures:
            raise self._failures[min(self._failures)]

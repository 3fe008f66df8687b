"""`market-pipeline run` of the whole graph in a subprocess, its process tree sampled: what the
bench's graph, parallel, ranges and vendor figures are measured with."""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from market_pipeline.settings import PipelineSettings

RSS_SAMPLE_SECONDS = 0.2
DAGSTER_YAML = Path(__file__).resolve().parents[2] / "dagster_home" / "dagster.yaml"


def quiet_dagster() -> None:
    """Hide Dagster's notices about APIs the pipeline chose from the report (the one filter: dagster_compat)."""
    from market_pipeline.defs.common.dagster_compat import accept_api_stability_warnings

    accept_api_stability_warnings()


class TreeSampler:
    """The resident memory (PSS where Linux gives it, else RSS) of a process and all its
    descendants, summed, every `interval` seconds on a thread.

    Sampled from outside: no high-water mark the code under test resets can hide a peak (a peak
    shorter than the interval can still be missed).
    """

    def __init__(self, pid: int, interval: float = RSS_SAMPLE_SECONDS) -> None:
        import psutil

        self.root = psutil.Process(pid)
        self.interval = interval
        self.samples: list[tuple[float, int]] = []  # (time.time(), bytes)
        self.cpu_samples: list[tuple[float, float]] = []  # (time.time(), the tree's CPU seconds so far)
        # The last CPU seconds (user + system) seen of every process of the tree, by (pid, start
        # time): the tree's CPU, short of what a process spent in its last interval.
        self._cpu: dict[tuple[int, float], float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _sample(self) -> None:
        import psutil

        try:
            procs = [self.root, *self.root.children(recursive=True)]
        except psutil.Error:
            return
        total = 0
        for proc in procs:
            try:
                times = proc.cpu_times()
                self._cpu[(proc.pid, proc.create_time())] = times.user + times.system
            except psutil.Error:
                pass
            try:
                # PSS: resident pages, those shared with other processes of the tree (forkserver
                # children, copy-on-write) divided among them, so the sum is the tree's own memory.
                total += proc.memory_full_info().pss
            except (psutil.Error, AttributeError):  # ended meanwhile, or no PSS on this platform
                try:
                    total += proc.memory_info().rss
                except psutil.Error:
                    pass
        now = time.time()
        self.samples.append((now, total))
        self.cpu_samples.append((now, self.cpu_seconds))

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.interval)

    def __enter__(self) -> TreeSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def cpu_seconds(self) -> float:
        return sum(self._cpu.values())

    def cpu_between(self, start: float, end: float) -> float:
        """The tree's CPU seconds from `start` to `end` (time.time()), by the last samples before each."""

        def at(moment: float) -> float:
            return max((cpu for t, cpu in self.cpu_samples if t <= moment), default=0.0)

        return at(end) - at(start)

    def peak_mb(self, start: float = 0.0, end: float = float("inf")) -> float:
        inside = [rss for t, rss in self.samples if start <= t <= end]
        return max(inside, default=0) / 2**20


@dataclass
class GraphRun:
    exit_code: int
    seconds: float  # the subprocess, start to exit
    run_seconds: float  # the Dagster run, RUN_START to its end event
    run_cpu_seconds: float  # user + system CPU of the subprocess's tree during the run, as sampled
    peak_rss_mb: float
    steps: dict[str, dict[str, float]]  # step key -> seconds, peak_rss_mb (in order of start)
    log: Path
    # Kernels compiled in the first run (`run_graph`: with a reset, this is the second run, from
    # the cache); empty when the cache served every kernel the first time.
    compiled_first: tuple[str, ...] = ()


# A kernel's index file in the kernel cache: "<module>.<function>-<line>.py<version>.nbi".
_CACHE_INDEX = re.compile(r"(.+)-\d+\.py\d+\.nbi")


def cached_kernels() -> dict[str, int]:
    """Index file -> modification time (ns) of every kernel in the kernel cache this process
    uses (`kernel_cache`; the runs it starts inherit it). A kernel's index is written when the
    kernel is compiled, not when it is loaded."""
    directory = os.environ.get("NUMBA_CACHE_DIR")
    if not directory or not Path(directory).is_dir():
        return {}
    return {str(p): p.stat().st_mtime_ns for p in Path(directory).rglob("*.nbi")}


def compiled_kernels(before: dict[str, int]) -> list[str]:
    """The kernels compiled since `cached_kernels()` returned `before`: a run that compiled timed
    the compiling too. The run's own progress lines name a compile only when nothing else was said
    for a while, which missed the capture kernels' (4-5 s of its rebuild step)."""
    changed = [path for path, mtime in cached_kernels().items() if before.get(path) != mtime]
    names = [match.group(1) for path in changed if (match := _CACHE_INDEX.fullmatch(Path(path).name))]
    return sorted(set(names))


def graph_env(
    settings: PipelineSettings, home: Path, workers: int | None, source_env: dict[str, str] | None = None
) -> dict[str, str]:
    """The environment of a `market-pipeline run` subprocess for `settings`' data dir, source and
    instruments; `source_env` (e.g. PIPELINE_SOURCE=tardis and its directory) replaces the
    synthetic source."""
    env = dict(os.environ)
    env.update(
        {
            "DAGSTER_HOME": str(home),
            "PIPELINE_DATA_DIR": str(settings.data_dir.resolve()),
            "PIPELINE_SOURCE": "synthetic",
            "PIPELINE_INSTRUMENTS": ",".join(i.key for i in settings.universe),
            "PIPELINE_SYNTHETIC__PROFILE": "realistic",
            "PIPELINE_SYNTHETIC__SCALE": str(settings.synthetic.scale),
        }
    )
    env.update(source_env or {})
    if workers is not None:
        env["PIPELINE_WORKERS"] = str(workers)
    return env


def run_sampled(argv: list[str], env: dict[str, str], log: Path) -> tuple[int, float, TreeSampler]:
    """Run `argv` to its end, output to `log`, its process tree sampled: (exit code, wall seconds, sampler)."""
    with log.open("w") as out:
        started = time.perf_counter()
        child = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT)
        with TreeSampler(child.pid) as sampler:
            code = child.wait()
        return code, time.perf_counter() - started, sampler


def run_graph(
    settings: PipelineSettings,
    day: dt.date,
    select: list[str] | None = None,
    workers: int | None = None,
    end: dt.date | None = None,
    source_env: dict[str, str] | None = None,
    reset: Callable[[], None] | None = None,
) -> GraphRun:
    """`market-pipeline run` for `day` (to `end`) in a subprocess with a DAGSTER_HOME of its own,
    sampled. A run that compiled kernels (a signature or a source the cache had not seen) timed the
    compiling too: with `reset` (which puts the data directory back as the run found it, its
    sources' caches too), it is run again and the second run returned; either way
    `compiled_first` names them."""
    before = cached_kernels()
    graph = _run_graph_once(settings, day, select, workers, end, source_env)
    compiled = tuple(compiled_kernels(before))
    if compiled and graph.exit_code == 0 and reset is not None:
        reset()
        graph = _run_graph_once(settings, day, select, workers, end, source_env)
    return replace(graph, compiled_first=compiled)


def _run_graph_once(
    settings: PipelineSettings,
    day: dt.date,
    select: list[str] | None,
    workers: int | None,
    end: dt.date | None,
    source_env: dict[str, str] | None,
) -> GraphRun:
    home = Path(tempfile.mkdtemp(prefix="bench-dagster-home-"))
    if DAGSTER_YAML.is_file():
        shutil.copy(DAGSTER_YAML, home / "dagster.yaml")
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    log = settings.data_dir / "bench-graph.log"
    argv = [sys.executable, "-m", "market_pipeline.cli.main", "run"]
    argv += ["--start-date", str(day), "--end-date", str(end or day)]
    if select:
        argv += ["--select", *select]
    try:
        code, seconds, sampler = run_sampled(argv, graph_env(settings, home, workers, source_env), log)
        (run_start, run_end), steps = _step_timings(home, sampler)
    finally:
        shutil.rmtree(home, ignore_errors=True)
    run_seconds, run_cpu = max(0.0, run_end - run_start), sampler.cpu_between(run_start, run_end)
    return GraphRun(code, seconds, run_seconds, run_cpu, sampler.peak_mb(), steps, log)


def _step_timings(home: Path, sampler: TreeSampler) -> tuple[tuple[float, float], dict[str, dict[str, float]]]:
    """The run's (start, end) time.time() from its events, and the seconds (step events) and peak
    RSS (samples inside the step) of every step of the run."""
    import dagster as dg

    quiet_dagster()
    kinds = {
        dg.DagsterEventType.RUN_START,
        dg.DagsterEventType.RUN_SUCCESS,
        dg.DagsterEventType.RUN_FAILURE,
        dg.DagsterEventType.STEP_START,
        dg.DagsterEventType.STEP_SUCCESS,
        dg.DagsterEventType.STEP_FAILURE,
    }
    saved = os.environ.get("DAGSTER_HOME")
    os.environ["DAGSTER_HOME"] = str(home)  # the copied dagster.yaml reads its storage path from it
    try:
        with dg.DagsterInstance.from_config(str(home)) as instance:
            runs = instance.get_runs(limit=1)
            entries = instance.all_logs(runs[0].run_id, of_type=kinds) if runs else []
    finally:
        if saved is None:
            os.environ.pop("DAGSTER_HOME", None)
        else:
            os.environ["DAGSTER_HOME"] = saved
    run_start = run_end = 0.0
    starts: dict[str, float] = {}
    steps: dict[str, dict[str, float]] = {}
    for entry in entries:
        kind = entry.dagster_event.event_type if entry.dagster_event else None
        if kind == dg.DagsterEventType.RUN_START:
            run_start = entry.timestamp
        elif kind in (dg.DagsterEventType.RUN_SUCCESS, dg.DagsterEventType.RUN_FAILURE):
            run_end = entry.timestamp
        elif kind == dg.DagsterEventType.STEP_START and entry.step_key:
            starts[entry.step_key] = entry.timestamp
        elif entry.step_key in starts:
            start = starts[entry.step_key]
            steps[entry.step_key] = {
                "seconds": round(entry.timestamp - start, 3),
                "peak_rss_mb": round(sampler.peak_mb(start, entry.timestamp + RSS_SAMPLE_SECONDS), 1),
            }
    return (run_start, run_end), steps

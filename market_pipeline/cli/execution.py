"""Materialize a date range of the asset graph as ONE Dagster run, in this process.

This is what `market-pipeline run` and `market-pipeline demo` share. The run goes through the
implicit asset job of the code location (`market_pipeline.definitions.build_definitions`, so it
gets the code location's own resources, asset checks and loggers), is recorded in the persistent
instance of $DAGSTER_HOME, and carries Dagster's partition-range tags, which is how a single-run backfill is expressed:
every selected asset (BackfillPolicy.single_run()) gets all days of the range in one step.

A run executed in this process has no run worker the daemon could watch, so each run records the
host and process that execute it as tags, and every new run first recovers the runs of this host
whose process is gone (kill -9, power loss, OOM killer): it marks them failed and frees the
concurrency-pool slots they held, which would otherwise block the `duckdb` steps of every later
run. While a step waits for a pool slot the command says so, and it gives up after
`cli.run_wait_timeout_seconds` (docs/operations.md, "Recovering from a crash").
"""

from __future__ import annotations

import ctypes
import datetime as dt
import logging
import os
import socket
import threading
import time
from contextlib import nullcontext
from dataclasses import dataclass
from functools import reduce
from pathlib import Path
from typing import TYPE_CHECKING, Any

from market_pipeline.cli.common import EXIT_FAILED, EXIT_USAGE, CliError, eprint
from market_pipeline.cli.progress import RunProgress
from market_pipeline.core.errors import BlockedError, PipelineError, kind_of
from market_pipeline.defs.common.partitions import RANGE_END_TAG, RANGE_START_TAG

if TYPE_CHECKING:
    import dagster as dg

    from market_pipeline.settings import PipelineSettings

    # What `dg.Definitions.resolve_asset_graph()` returns; `dagster` does not export its class.
    AssetGraph = Any

LAUNCHED_BY_TAG = "market_pipeline/launched_by"
# Who executes an in-process run: the host, the process id and the process's start time (clock
# ticks since boot, from /proc/<pid>/stat), so a pid reused by another process is not taken for it.
HOST_TAG = "market_pipeline/host"
PID_TAG = "market_pipeline/pid"
PID_START_TAG = "market_pipeline/pid_start"

WAIT_POLL_SECONDS = 1.0  # how often a running command looks at the pools
WAIT_FIRST_NOTICE_SECONDS = 3.0  # a wait shorter than this is not worth a line
WAIT_NOTICE_EVERY_SECONDS = 30.0

_LOG_LEVELS = {0: "WARNING", 1: "INFO"}


def dagster_log_level(verbosity: int) -> str:
    return _LOG_LEVELS.get(verbosity, "DEBUG")


def _not_ungated_check_notice(record: logging.LogRecord) -> bool:
    """Logging filter: False (drop) for Dagster's "blocking check emitted no result" notice."""
    message = record.getMessage()
    return not ("emitted no result" in message and "will proceed without gating" in message)


def quiet_dagster(verbosity: int) -> None:
    """Dagster's own Python logging, unless -v was given (its API-stability warnings: dagster_compat)."""
    logging.getLogger("dagster").setLevel(dagster_log_level(verbosity))
    # Our daily checks report one evaluation per day as events, not as the step's output, so
    # Dagster notes that downstream steps are not gated on an output. They are gated all the
    # same: a failed blocking evaluation fails the check step (quality/check_support.py).
    # The notice comes from a logger of Dagster's internal modules (named after the module), and
    # a logger's filters do not apply to the records of its children, so the filter goes on the
    # handlers that print propagated records: the `dagster` and root loggers' handlers and
    # Python's last-resort stderr handler (the one used when no handler is configured).
    if verbosity < 2:
        handlers = [*logging.getLogger("dagster").handlers, *logging.getLogger().handlers, logging.lastResort]
        for handler in handlers:
            if handler is not None and _not_ungated_check_notice not in handler.filters:
                handler.addFilter(_not_ungated_check_notice)


def require_dagster_home() -> Path:
    """The persistent instance directory; never fall back to Dagster's throwaway instance."""
    value = os.environ.get("DAGSTER_HOME", "").strip()
    if not value:
        raise CliError(
            "DAGSTER_HOME is not set. Without it Dagster would record the run in a temporary "
            "instance that vanishes when this process exits. Set it to the instance directory, "
            "e.g. `export DAGSTER_HOME=$PWD/dagster_home` (the Makefile does this for you).",
            EXIT_USAGE,
        )
    home = Path(value)
    if not home.is_absolute():
        raise CliError(f"DAGSTER_HOME={value} must be an absolute path", EXIT_USAGE)
    if not home.is_dir():
        raise CliError(f"DAGSTER_HOME={value} is not an existing directory", EXIT_USAGE)
    return home


INSTANCE_LOCK = ".market_pipeline-instance.lock"


def open_instance() -> dg.DagsterInstance:
    """The DAGSTER_HOME instance, opened under a lock file in DAGSTER_HOME.

    Opening a new SQLite instance creates its schema (and stamps alembic's version table): two
    first commands on a fresh DAGSTER_HOME once raced there, and one died with `table
    alembic_version already exists`. The lock makes the second wait (it says so) until the
    first has created the schema, then open it as it is.
    """
    import dagster as dg

    from market_pipeline.core.lake.cache_lock import cache_lock

    with cache_lock(require_dagster_home() / INSTANCE_LOCK, "opening the Dagster instance in DAGSTER_HOME"):
        return dg.DagsterInstance.get()


def load_defs(settings: PipelineSettings) -> dg.Definitions:
    """The code location's Definitions for `settings`, built once (importing the module builds
    nothing: its `defs` is Dagster's lazy entry point). Imported late: the CLI's other commands
    never load Dagster's definitions."""
    from market_pipeline.settings import SettingsError

    try:
        from market_pipeline.definitions import build_definitions

        # Built from the settings this command loaded (the demo's differ from the environment's).
        defs = build_definitions(settings)
    except SettingsError:
        raise
    except Exception as exc:  # a broken module in the code location: say so, not a traceback
        raise CliError(
            f"cannot load the Dagster definitions (market_pipeline.definitions): {type(exc).__name__}: {exc}"
        ) from exc
    return defs


def resolve_selection(defs: dg.Definitions, selections: list[str] | None) -> list[dg.AssetKey]:
    """Asset keys (materializable, in dependency order) matched by Dagster selection strings.

    None or [] selects every asset of the code location.
    """
    import dagster as dg

    graph = defs.resolve_asset_graph()
    if selections:
        parts = []
        for text in selections:
            try:
                selection = dg.AssetSelection.from_string(text)
                if not selection.resolve(graph):
                    raise CliError(f"--select {text!r} matches no asset", EXIT_USAGE)
            except CliError:
                raise
            except Exception as exc:
                raise CliError(f"--select {text!r}: {exc}", EXIT_USAGE) from None
            parts.append(selection)
        # An asset written by a multi-asset together with others (validation_reports and its
        # hourly table) can only be materialized with them.
        selection = reduce(lambda a, b: a | b, parts).required_multi_asset_neighbors()
    else:
        selection = dg.AssetSelection.all()
    keys = {k for k in selection.resolve(graph) if graph.get(k).is_materializable}
    if not keys:
        raise CliError("the selection contains no materializable asset", EXIT_USAGE)
    return [k for k in graph.toposorted_asset_keys if k in keys]


def check_partitions(graph: AssetGraph, keys: list[dg.AssetKey], start: dt.date, end: dt.date) -> None:
    """Every partitioned asset in the run must have both ends of the range as partitions."""
    by_def: dict[Any, list[str]] = {}
    for key in keys:
        partitions_def = graph.get(key).partitions_def
        if partitions_def is not None:
            by_def.setdefault(partitions_def, []).append(key.to_user_string())
    for partitions_def, names in by_def.items():
        for day, option in ((start, "--start-date"), (end, "--end-date")):
            if partitions_def.has_partition_key(day.isoformat()):
                continue
            first = partitions_def.get_first_partition_key()
            last = partitions_def.get_last_partition_key()
            hint = ""
            if last is not None and day.isoformat() > last:
                hint = f" (a day becomes a partition once it is over in UTC; the latest is {last})"
            raise CliError(
                f"{option} {day} is not a partition of {', '.join(names)}: partitions run from {first} to {last}{hint}",
                EXIT_USAGE,
            )


def _multi_day_risks(graph: AssetGraph, keys: list[dg.AssetKey], days: int) -> list[str]:
    risky = []
    for key in keys:
        node = graph.get(key)
        if node.partitions_def is None or days == 1:
            continue
        policy = node.backfill_policy
        limit = policy.max_partitions_per_run if policy is not None else 1
        if limit is not None and limit < days:
            risky.append(key.to_user_string())
    return risky


class _DropFailureEvents(logging.Filter):
    """Step, resource-initialization and run failure events carry full stack traces; the CLI prints
    their messages itself (the traces stay in the run's event log, and -vv prints them)."""

    def filter(self, record: logging.LogRecord) -> bool:
        event = getattr(record, "dagster_event", None)
        if event is None:
            return True
        return not any(
            getattr(event, name, False) for name in ("is_step_failure", "is_resource_init_failure", "is_run_failure")
        )


def _quiet_console_logger() -> dg.LoggerDefinition:
    import dagster as dg

    default = dg.colored_console_logger

    @dg.logger(default.config_schema, description="Dagster's console logger without failure stack traces.")
    def quiet_console_logger(init_context: dg.InitLoggerContext) -> logging.Logger:
        log = default.logger_fn(init_context)
        for handler in log.handlers:
            handler.addFilter(_DropFailureEvents())
        return log

    return quiet_console_logger


def _process_start(pid: int) -> str | None:
    """The start time of process `pid` (clock ticks since boot), None when it is not known."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2 :].split()  # the command name may hold spaces and parentheses
    return fields[19] if len(fields) > 19 else None


def launcher_tags() -> dict[str, str]:
    """The run tags naming this process, for `dead_run_reason` to judge later."""
    tags = {HOST_TAG: socket.gethostname(), PID_TAG: str(os.getpid())}
    start = _process_start(os.getpid())
    if start is not None:
        tags[PID_START_TAG] = start
    return tags


def dead_run_reason(run: dg.DagsterRun) -> str | None:
    """Why an unfinished run launched by this CLI on this host can no longer be running (None when it
    may be: another host, no tags, or its process is alive)."""
    host, pid_text = run.tags.get(HOST_TAG), run.tags.get(PID_TAG)
    if host != socket.gethostname() or pid_text is None or not pid_text.isdigit():
        return None
    pid = int(pid_text)
    recorded_start = run.tags.get(PID_START_TAG)
    current_start = _process_start(pid)
    if recorded_start is not None and current_start is not None and current_start != recorded_start:
        return f"process {pid} on {host} that executed it is gone (the pid now belongs to another process)"
    if pid == os.getpid():
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return f"process {pid} on {host} that executed it is gone"
    except OSError:  # PermissionError: alive, another user's
        return None
    return None


def _claimed_slots(instance: dg.DagsterInstance, run_id: str) -> list[str]:
    """The pools in which `run_id` holds slots (one entry per slot)."""
    storage = instance.event_log_storage
    if not storage.supports_global_concurrency_limits:
        return []
    pools = []
    for pool in sorted(storage.get_concurrency_keys()):
        pools += [pool for slot in storage.get_concurrency_info(pool).claimed_slots if slot.run_id == run_id]
    return pools


def recover_run(instance: dg.DagsterInstance, run: dg.DagsterRun, reason: str) -> str:
    """Mark a dead run failed and free its pool slots; returns the line to print."""
    held = _claimed_slots(instance, run.run_id)
    instance.report_run_failed(
        run,
        message=f"Marked failed by market-pipeline before a new run: the {reason}, so the run was killed "
        "(kill -9, power loss, out of memory) before it could record its end. Its pool slots were freed.",
    )
    instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
    days = run.tags.get(RANGE_START_TAG, "?") + ".." + run.tags.get(RANGE_END_TAG, "?")
    slots = f"{len(held)} slot(s) of pool {', '.join(sorted(set(held)))}" if held else "no pool slot"
    return (
        f"recovered dead run {run.run_id} ({run.tags.get(LAUNCHED_BY_TAG, 'unknown')}, {days}, "
        f"was {run.status.value}): the {reason}; marked it FAILURE and freed {slots}"
    )


def recover_dead_runs(instance: dg.DagsterInstance) -> list[str]:
    """Recover every unfinished run of this host whose process is gone; one line per run."""
    import dagster as dg

    unfinished = [
        dg.DagsterRunStatus.NOT_STARTED,
        dg.DagsterRunStatus.STARTING,
        dg.DagsterRunStatus.STARTED,
        dg.DagsterRunStatus.CANCELING,
    ]
    records = instance.get_run_records(
        filters=dg.RunsFilter(statuses=unfinished, tags={HOST_TAG: socket.gethostname()})
    )
    lines = []
    for record in records:
        reason = dead_run_reason(record.dagster_run)
        if reason is not None:
            lines.append(recover_run(instance, record.dagster_run, reason))
    return lines + free_slots_of_dead_holders(instance)


def free_slots_of_dead_holders(instance: dg.DagsterInstance, run_ids: set[str] | None = None) -> list[str]:
    """Recover the runs holding pool slots (all of them, or `run_ids`) whose process on this host is
    gone: an unfinished one is failed and freed, a finished one (failed by hand in the UI, say) freed."""
    storage = instance.event_log_storage
    if run_ids is None:
        if not storage.supports_global_concurrency_limits:
            return []
        run_ids = {
            slot.run_id
            for pool in storage.get_concurrency_keys()
            for slot in storage.get_concurrency_info(pool).claimed_slots
        }
    lines = []
    for run_id in sorted(run_ids):
        run = instance.get_run_by_id(run_id)
        reason = dead_run_reason(run) if run is not None else None
        if run is None or reason is None:
            continue
        if not run.is_finished:
            lines.append(recover_run(instance, run, reason))
            continue
        held = _claimed_slots(instance, run_id)
        storage.free_concurrency_slots_for_run(run_id)
        lines.append(
            f"freed {len(held)} slot(s) of pool {', '.join(sorted(set(held)))} still held by run {run_id} "
            f"({run.status.value}): the {reason}"
        )
    return lines


def _describe_holder(instance: dg.DagsterInstance, run_id: str, step_key: str) -> str:
    run = instance.get_run_by_id(run_id)
    if run is None:
        return f"run {run_id} (step {step_key}), which is not in this instance"
    who = run.tags.get(LAUNCHED_BY_TAG) or "launched from Dagster"
    where = f", process {run.tags[PID_TAG]} on {run.tags[HOST_TAG]}" if PID_TAG in run.tags else ""
    return f"run {run_id} ({who}{where}, {run.status.value}, step {step_key})"


class _GaveUpWaiting(KeyboardInterrupt):
    """Raised in the thread executing the run when the watch gives up; Dagster fails the run."""


def _raise_in_thread(thread_id: int, exc_type: type[BaseException]) -> None:
    """Raise `exc_type` in another thread of this process at its next Python instruction.

    Dagster defers SIGINT while a step waits for a pool slot (it only raises interrupts inside a
    step's own code), so neither Ctrl-C nor `_thread.interrupt_main` can stop that wait; an
    asynchronous exception does, once the executor's sleep between claims (at most 15 s) returns.
    """
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id), ctypes.py_object(exc_type))


class PoolWaitWatch(threading.Thread):
    """Watches the pools while the run executes in the main thread: says what a step waits for,
    recovers a dead holder of the slot, and after `timeout` seconds of waiting interrupts the run."""

    def __init__(self, run_id: str, timeout: float, poll: float = WAIT_POLL_SECONDS) -> None:
        super().__init__(name="pool-wait-watch", daemon=True)
        self.run_id = run_id
        self.timeout = timeout
        self.poll = poll
        self.gave_up: str | None = None
        self._stop_event = threading.Event()
        self._executing_thread = threading.get_ident()  # created by the thread that executes the run
        self._since: float | None = None  # when this run's step started to wait (monotonic)
        self._noticed = 0.0  # when the last "waiting" line was printed

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=10)

    def _waits(self, instance: dg.DagsterInstance) -> list[tuple[str, str, list[tuple[str, str]]]]:
        """(pool, waiting step of this run, [(holder run, holder step)]) for each step of this run
        that waits for a slot."""
        storage = instance.event_log_storage
        waits = []
        for pool in sorted(storage.get_concurrency_keys()):
            info = storage.get_concurrency_info(pool)
            mine = [p.step_key for p in info.pending_steps if p.run_id == self.run_id and p.assigned_timestamp is None]
            if mine:
                holders = [(s.run_id, s.step_key) for s in info.claimed_slots if s.run_id != self.run_id]
                waits += [(pool, step, holders) for step in mine]
        return waits

    def run(self) -> None:
        import dagster as dg

        try:
            with dg.DagsterInstance.get() as instance:  # this thread's own connections
                self._watch(instance)
        except Exception as exc:  # the watch is a courtesy: never take the run down with it
            eprint(f"warning: cannot watch the concurrency pools: {type(exc).__name__}: {exc}")

    def _watch(self, instance: dg.DagsterInstance) -> None:
        warned = False
        while not self._stop_event.wait(self.poll):
            try:
                if self._look(instance):
                    return
            except Exception as exc:  # e.g. the instance's database briefly locked: look again
                if not warned:
                    eprint(f"warning: cannot read the concurrency pools: {type(exc).__name__}: {exc}")
                    warned = True

    def _look(self, instance: dg.DagsterInstance) -> bool:
        """One look at the pools; True once the watch gave up."""
        waits = self._waits(instance)
        if not waits:
            self._since = None
            return False
        for line in free_slots_of_dead_holders(instance, {run_id for _, _, holders in waits for run_id, _ in holders}):
            eprint(line)
        now = time.monotonic()
        self._since = self._since if self._since is not None else now
        waited = now - self._since
        pool, step, holders = waits[0]
        held_by = "; ".join(_describe_holder(instance, r, s) for r, s in holders) or "no run (the slot is free)"
        what = f"step {step} waits for a slot of pool {pool!r}, held by {held_by}"
        if waited >= self.timeout:
            self.gave_up = (
                f"gave up after {waited:.0f} s: {what}. If that run is dead, fail it in the UI (Runs -> "
                "Terminate) and free its slots (Deployment -> Concurrency); otherwise run again later or "
                "raise PIPELINE_CLI__RUN_WAIT_TIMEOUT_SECONDS"
            )
            run = instance.get_run_by_id(self.run_id)
            if run is not None:  # say why in the run's event log, for the UI
                instance.report_engine_event(f"market-pipeline {self.gave_up}", dagster_run=run)
            eprint(f"waiting: giving up after {waited:.0f} s; stopping the run")
            if not self._stop_event.is_set():
                _raise_in_thread(self._executing_thread, _GaveUpWaiting)
            return True
        if waited >= WAIT_FIRST_NOTICE_SECONDS and (
            self._noticed == 0.0 or now - self._noticed >= WAIT_NOTICE_EVERY_SECONDS
        ):
            self._noticed = now
            eprint(f"waiting {waited:.0f} s (giving up after {self.timeout:.0f} s): {what}")
        return False


def _error_names(error: Any) -> list[str]:
    """Class names of a serialized error and of its causes and contexts, outermost first."""
    names = []
    while error is not None:
        names.append(error.cls_name)
        error = error.cause or error.context
    return names


@dataclass
class RangeRun:
    """One finished range run: what was asked for, Dagster's in-process result, and the
    materializations and check evaluations as recorded in the instance's event log (events an
    asset logs with context.log_event before failing are there, not in the result's event list).
    """

    start: dt.date
    end: dt.date
    asset_keys: list[dg.AssetKey]
    asset_graph: AssetGraph
    result: dg.ExecuteInProcessResult
    materializations: list[dg.AssetMaterialization]
    check_evaluations: list[dg.AssetCheckEvaluation]

    @property
    def days(self) -> int:
        return (self.end - self.start).days + 1

    @property
    def success(self) -> bool:
        return self.result.success

    def failure_kind(self) -> type[PipelineError] | None:
        """The PipelineError kind of the first failed step's error, when it is one (None otherwise)."""
        for event in self.result.get_step_failure_events():
            data = event.step_failure_data
            kind = kind_of(_error_names(data.error)) if data is not None else None
            if kind is not None:
                return kind
        return None


def execute_range(
    defs: dg.Definitions,
    keys: list[dg.AssetKey],
    start: dt.date,
    end: dt.date,
    *,
    verbosity: int = 0,
    launched_by: str = "cli",
    wait_timeout_seconds: float = 3600.0,
    show_progress: bool = False,
) -> RangeRun:
    """Materialize `keys` for every day in [start, end] as one run in $DAGSTER_HOME's instance.

    Dead runs of this host are recovered first; a step that waits for a pool slot longer than
    `wait_timeout_seconds` fails the run and raises BlockedError.
    """
    import uuid

    import dagster as dg

    from market_pipeline.defs.common.json_logs import json_console_logger

    require_dagster_home()
    graph = defs.resolve_asset_graph()
    check_partitions(graph, keys, start, end)
    risky = _multi_day_risks(graph, keys, (end - start).days + 1)
    if risky:
        eprint(
            "warning: these assets do not declare BackfillPolicy.single_run() and may not "
            f"accept a {start}..{end} range in one run: {', '.join(risky)}"
        )

    job = defs.resolve_implicit_job_def_def_for_assets(keys)
    if job is None:
        raise CliError("Dagster found no asset job covering the selected assets")
    run_config: dict[str, Any] = {}
    console = job.loggers.get("console")
    if console is dg.colored_console_logger or console is json_console_logger:
        # The code location's console logger (Dagster's default, or JSON lines): set its threshold.
        run_config["loggers"] = {"console": {"config": {"log_level": dagster_log_level(verbosity)}}}
        if verbosity == 0 and console is dg.colored_console_logger:
            job = job.with_logger_defs({**job.loggers, "console": _quiet_console_logger()})
    tags = {
        RANGE_START_TAG: start.isoformat(),
        RANGE_END_TAG: end.isoformat(),
        LAUNCHED_BY_TAG: launched_by,
        **launcher_tags(),
    }
    run_id = str(uuid.uuid4())
    watch = PoolWaitWatch(run_id, wait_timeout_seconds)
    try:
        with open_instance() as instance:
            for line in recover_dead_runs(instance):
                eprint(line)
            watch.start()
            try:
                with RunProgress(run_id) if show_progress else nullcontext():
                    result = job.execute_in_process(
                        run_config=run_config,
                        instance=instance,
                        asset_selection=keys,
                        run_id=run_id,
                        tags=tags,
                        raise_on_error=False,
                    )
            except BaseException:  # KeyboardInterrupt, or Dagster's own interrupt error
                if watch.gave_up is None:
                    raise
                result = None
            finally:
                watch.stop()
            if watch.gave_up is not None:
                run = instance.get_run_by_id(run_id)
                if run is not None and not run.is_finished:
                    instance.report_run_failed(run, message=f"market-pipeline {watch.gave_up}")
                instance.event_log_storage.free_concurrency_slots_for_run(run_id)  # its queued claims
                raise BlockedError(watch.gave_up)
            assert result is not None
            materializations = [
                entry.asset_materialization
                for entry in instance.all_logs(run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION)
                if entry.asset_materialization is not None
            ]
            checks = [
                entry.asset_check_evaluation
                for entry in instance.all_logs(run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION)
                if entry.asset_check_evaluation is not None
            ]
    except dg.DagsterError as exc:
        # Raised before any step ran (bad instance config, invalid run config, bad selection).
        raise CliError(f"Dagster could not start the run: {type(exc).__name__}: {exc}", EXIT_FAILED) from exc
    return RangeRun(
        start=start,
        end=end,
        asset_keys=keys,
        asset_graph=graph,
        result=result,
        materializations=materializations,
        check_evaluations=checks,
    )

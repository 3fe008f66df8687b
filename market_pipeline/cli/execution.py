"""Materialize a date range of the asset graph as ONE Dagster run, in this process.

This is what `market-pipeline run` and `market-pipeline demo` share. The run goes through the
implicit asset job of the code location (`market_pipeline.definitions.build_definitions`, so it
gets the code location's own resources, asset checks and loggers), is recorded in the persistent
instance of $DAGSTER_HOME, and carries Dagster's partition-range tags, which is how a single-run backfill is expressed:
every selected asset (BackfillPolicy.single_run()) gets all days of the range in one step.

Before it starts, the dead runs of this host are recovered (`dead_runs.py`); while it executes, a
watch over the concurrency pools says what a step waits for and gives up after
`cli.run_wait_timeout_seconds` (`pool_wait.py`).
"""

from __future__ import annotations

import datetime as dt
import logging
from contextlib import nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from market_pipeline.cli.code_location import check_partitions, multi_day_risks
from market_pipeline.cli.common import EXIT_FAILED, CliError, eprint
from market_pipeline.cli.dagster_instance import dagster_log_level, open_instance, require_dagster_home
from market_pipeline.cli.dead_runs import LAUNCHED_BY_TAG, launcher_tags, recover_dead_runs
from market_pipeline.cli.heap import startup_heap_frozen
from market_pipeline.cli.pool_wait import PoolWaitWatch
from market_pipeline.cli.progress import RunProgress
from market_pipeline.core.errors import BlockedError, PipelineError, kind_of
from market_pipeline.defs.common.partitions import RANGE_END_TAG, RANGE_START_TAG

if TYPE_CHECKING:
    import dagster as dg

    from market_pipeline.cli.code_location import AssetGraph


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
    risky = multi_day_risks(graph, keys, (end - start).days + 1)
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
                with RunProgress(run_id) if show_progress else nullcontext(), startup_heap_frozen():
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

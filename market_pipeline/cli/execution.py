"""Materialize a date range of the asset graph as ONE Dagster run, in this process.

This is what `market-pipeline run` and `market-pipeline demo` share. The run goes through the
implicit asset job of `market_pipeline.definitions.defs` (so it gets the code location's own
resources, asset checks and loggers), is recorded in the persistent instance of $DAGSTER_HOME,
and carries Dagster's partition-range tags, which is how a single-run backfill is expressed:
every selected asset (BackfillPolicy.single_run()) gets all days of the range in one step.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import warnings
from dataclasses import dataclass
from functools import reduce
from pathlib import Path
from typing import TYPE_CHECKING, Any

from market_pipeline.cli.common import EXIT_FAILED, EXIT_USAGE, CliError, eprint

if TYPE_CHECKING:
    import dagster as dg

    from market_pipeline.settings import PipelineSettings

    # What `dg.Definitions.resolve_asset_graph()` returns; `dagster` does not export its class.
    AssetGraph = Any

RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"
LAUNCHED_BY_TAG = "market_pipeline/launched_by"

_LOG_LEVELS = {0: "WARNING", 1: "INFO"}


def dagster_log_level(verbosity: int) -> str:
    return _LOG_LEVELS.get(verbosity, "DEBUG")


def _not_ungated_check_notice(record: logging.LogRecord) -> bool:
    """Logging filter: False (drop) for Dagster's "blocking check emitted no result" notice."""
    message = record.getMessage()
    return not ("emitted no result" in message and "will proceed without gating" in message)


def quiet_dagster(verbosity: int) -> None:
    """Dagster's own Python logging and its API-stability warnings, unless -v was given."""
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
    if verbosity == 0:
        import dagster as dg

        for category in (dg.BetaWarning, dg.PreviewWarning, dg.SupersessionWarning):
            warnings.filterwarnings("ignore", category=category)


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


def load_defs(settings: PipelineSettings) -> dg.Definitions:
    """The code location's Definitions for `settings` (the module is imported late: importing it
    also builds `definitions.defs` from the environment's settings, as Dagster's loaders expect)."""
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
    """Step/run failure events carry full stack traces; the CLI prints their messages itself."""

    def filter(self, record: logging.LogRecord) -> bool:
        event = getattr(record, "dagster_event", None)
        if event is None:
            return True
        return not (getattr(event, "is_step_failure", False) or getattr(event, "is_run_failure", False))


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


def execute_range(
    defs: dg.Definitions,
    keys: list[dg.AssetKey],
    start: dt.date,
    end: dt.date,
    *,
    verbosity: int = 0,
    launched_by: str = "cli",
) -> RangeRun:
    """Materialize `keys` for every day in [start, end] as one run in $DAGSTER_HOME's instance."""
    import dagster as dg

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
    if job.loggers.get("console") is dg.colored_console_logger:
        # The code location keeps Dagster's default console logger: set its threshold.
        run_config["loggers"] = {"console": {"config": {"log_level": dagster_log_level(verbosity)}}}
        if verbosity == 0:
            job = job.with_logger_defs({**job.loggers, "console": _quiet_console_logger()})
    tags = {
        RANGE_START_TAG: start.isoformat(),
        RANGE_END_TAG: end.isoformat(),
        LAUNCHED_BY_TAG: launched_by,
    }
    try:
        with dg.DagsterInstance.get() as instance:
            result = job.execute_in_process(
                run_config=run_config,
                instance=instance,
                asset_selection=keys,
                tags=tags,
                raise_on_error=False,
            )
            run_id = result.run_id
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

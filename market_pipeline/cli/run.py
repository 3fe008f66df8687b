"""`market-pipeline run`: a date range of the asset graph as one Dagster run, then its summary
(shared with `market-pipeline demo`)."""

from __future__ import annotations

import datetime as dt
import textwrap

from market_pipeline.cli.common import EXIT_FAILED, EXIT_OK, EXIT_USAGE, WIDTH, CliError, parse_date
from market_pipeline.cli.heap import collections_paused
from market_pipeline.core.lake.scratch import remove_run_copies
from market_pipeline.settings import PipelineSettings


@collections_paused()  # the process collects no garbage but during the run
def run_range(
    settings: PipelineSettings,
    start: dt.date,
    end: dt.date,
    selections: list[str] | None,
    verbosity: int,
    launched_by: str,
    show_progress: bool = True,
) -> int:
    """Build the definitions from `settings`, execute the range as one run, print the summary."""
    from market_pipeline.cli.code_location import load_defs, resolve_selection
    from market_pipeline.cli.dagster_instance import quiet_dagster, require_dagster_home
    from market_pipeline.cli.execution import execute_range
    from market_pipeline.cli.report import print_run_summary
    from market_pipeline.core import context
    from market_pipeline.defs.common.parallel import start_workers_early
    from market_pipeline.defs.common.resources import lake_context

    if start > end:
        raise CliError(f"--start-date {start} is after --end-date {end}", EXIT_USAGE)
    if start < settings.start_date:
        raise CliError(
            f"--start-date {start} is before the first partition {settings.start_date} (PIPELINE_START_DATE)",
            EXIT_USAGE,
        )
    require_dagster_home()
    require_writable_data_dir(settings)
    with context.using(lake_context(settings)):  # this process creates and reads the lake views after the run
        _require_remote_dependencies(settings)
        quiet_dagster(verbosity)
        defs = load_defs(settings)
        keys = resolve_selection(defs, selections)
        start_workers_early(settings, len(settings.universe) * ((end - start).days + 1))
        names = ", ".join(key.to_user_string() for key in keys)
        print(f"materializing {len(keys)} asset(s) for {start}..{end} as one run in DAGSTER_HOME")
        print(textwrap.fill(names, width=WIDTH, initial_indent="  ", subsequent_indent="  "), flush=True)
        run = execute_range(
            defs,
            keys,
            start,
            end,
            verbosity=verbosity,
            launched_by=launched_by,
            wait_timeout_seconds=settings.cli.run_wait_timeout_seconds,
            show_progress=show_progress,
        )
        # The lake copies the run kept for its later steps are the bucket's objects: gone, whatever the outcome.
        remove_run_copies(settings.data_dir, run.result.run_id)
        _ensure_lake_views(settings)  # a run that selected only Parquet steps leaves its views to be created
        print_run_summary(run, settings, verbosity)
        if run.success:
            from market_pipeline.defs.automation.scratch import remove_succeeded_run_scratch

            days = [start + dt.timedelta(days=i) for i in range((end - start).days + 1)]
            for line in remove_succeeded_run_scratch(settings, run.result.run_id, days):
                print(line)
            return EXIT_OK
        kind = run.failure_kind()  # e.g. a source or input-data error in a step: that kind's code
        return kind.exit_code if kind is not None else EXIT_FAILED


def require_writable_data_dir(settings: PipelineSettings) -> None:
    """Refuse to start a run into a data dir that is not a writable directory, naming the variable."""
    from market_pipeline.cli.validate import writable_dir_problem
    from market_pipeline.settings import SettingsError

    problem = writable_dir_problem(settings.data_dir)
    if problem:
        raise SettingsError(
            [f"PIPELINE_DATA_DIR: {problem}; point PIPELINE_DATA_DIR at a directory this user can write"]
        )


def _require_remote_dependencies(settings: PipelineSettings) -> None:
    """Refuse to start a run whose lake bucket (PIPELINE_LAKE_URL) or DuckLake catalog
    (PIPELINE_CATALOG_URL) cannot be used: one line naming the setting and what to check, and the
    configuration exit code, instead of a run whose every step fails the same way."""
    from market_pipeline.core.lake import storage, warehouse

    if settings.lake_url:
        storage.check_lake_store(settings.lake_dir)  # type: ignore[arg-type]  # a UPath with a lake URL
    if settings.warehouse.is_ducklake:
        warehouse.check_warehouse(settings.warehouse)


def _ensure_lake_views(settings: PipelineSettings) -> None:
    """Create the warehouse views over the lake that are still missing (they read hive globs, so
    once is enough); a warehouse another process is writing is left for the `lake_views` step."""
    import duckdb

    from market_pipeline.core.lake.catalog import BARS_VIEWS, LAKE_VIEWS, ensure_lake_views

    try:
        ensure_lake_views(settings.warehouse, settings.lake_dir, (*LAKE_VIEWS, *BARS_VIEWS))
    except duckdb.IOException as exc:  # locked by a concurrent writer
        print(f"  (views not created now: {exc})")


def run_command(start: str, end: str, selections: list[str] | None, verbosity: int, show_progress: bool) -> int:
    from market_pipeline.settings import load_settings

    first, last = parse_date(start, "--start-date"), parse_date(end, "--end-date")
    return run_range(load_settings(), first, last, selections, verbosity, "cli-run", show_progress)

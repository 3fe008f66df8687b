"""`market-pipeline health`: one JSON object on stdout for cron and runbooks.

Exit 0 when nothing needs attention, 1 when something does (listed in `problems`), 10 when only
checks failed with WARN severity (listed in `warnings`, status "warnings"). Needs attention: no
usable DAGSTER_HOME, invalid settings, a missing or unreadable data directory, a warehouse that is
missing, corrupt or unreadable, a day whose latest check result failed with ERROR severity, or
less free disk than `metrics.min_free_disk_gb`. A warehouse locked by a running writer is reported
as "busy" (a warning, exit 0): that is the pipeline working, not broken. A check with no result
says why in words (`explanation`, e.g. freshness is judged only by its own job).

Everything is opened read-only: the warehouse with DuckDB's read_only mode, the Dagster
instance through its storage APIs.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from market_pipeline.cli.common import EXIT_FAILED, EXIT_OK
from market_pipeline.core.errors import EXIT_WARNINGS
from market_pipeline.core.lake import storage
from market_pipeline.core.lake.store_errors import LakeStoreUnavailable

if TYPE_CHECKING:
    import dagster as dg

    from market_pipeline.settings import PipelineSettings

_GB = 1024**3


def _iso(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    return dt.datetime.fromtimestamp(timestamp, dt.UTC).isoformat(timespec="seconds")


def load_code_location(settings: PipelineSettings) -> dg.Definitions:
    """The code location whose assets and checks are reported (tests replace it)."""
    from market_pipeline.cli.code_location import load_defs

    return load_defs(settings)


def _dagster_home(report: dict[str, Any], problems: list[str]) -> Path | None:
    value = os.environ.get("DAGSTER_HOME", "").strip()
    report["dagster_home"] = value or None
    if not value:
        problems.append("DAGSTER_HOME is not set: there is no run history to report on")
        return None
    home = Path(value)
    if not home.is_absolute() or not home.is_dir():
        problems.append(f"DAGSTER_HOME={value} is not an absolute path to an existing directory")
        return None
    return home


def _asset_report(instance: dg.DagsterInstance, defs: dg.Definitions) -> dict[str, Any]:
    graph = defs.resolve_asset_graph()
    assets: dict[str, Any] = {}
    for key in graph.toposorted_asset_keys:
        if not graph.get(key).is_materializable:
            continue
        latest = instance.get_latest_materialization_event(key)
        partitions = sorted(instance.get_materialized_partitions(key)) if graph.get(key).partitions_def else []
        assets[key.to_user_string()] = {
            "last_partition": partitions[-1] if partitions else None,
            "partitions_materialized": len(partitions),
            "last_materialized_at": _iso(latest.timestamp) if latest else None,
        }
    return assets


def _dagster_report(
    report: dict[str, Any], problems: list[str], check_warnings: list[str], settings: PipelineSettings | None
) -> None:
    if _dagster_home(report, problems) is None:
        return
    if settings is None:  # the settings' own problems are listed as well
        problems.append("cannot load the code location: the settings are invalid")
        return

    from market_pipeline.cli.dagster_instance import open_instance, quiet_dagster
    from market_pipeline.cli.health_checks import check_report

    quiet_dagster(0)
    try:
        defs = load_code_location(settings)
    except Exception as exc:  # a broken code location is itself something to look at
        problems.append(f"cannot load the code location: {exc}")
        return
    try:
        with open_instance() as instance:
            report["assets"] = _asset_report(instance, defs)
            report["checks"] = check_report(instance, defs, problems, check_warnings)
    except Exception as exc:
        problems.append(f"cannot read the Dagster instance in {report['dagster_home']}: {type(exc).__name__}: {exc}")


def _tree_size(root: Path) -> tuple[int, int]:
    if storage.is_remote(root):
        storage.check_lake_store(root)  # type: ignore[arg-type]  # a missing bucket would list as empty
        return storage.remote_tree_size(root)  # type: ignore[arg-type]
    size = files = 0
    for path in root.rglob("*"):
        try:
            if path.is_file():
                size += path.stat().st_size
                files += 1
        except OSError:  # a file replaced while walking (atomic rename): skip it
            continue
    return size, files


def _disk_report(settings: PipelineSettings, report: dict[str, Any], problems: list[str]) -> bool:
    data_dir = settings.data_dir.resolve()
    report["data_dir"] = str(data_dir)
    if not data_dir.is_dir():
        problems.append(f"PIPELINE_DATA_DIR {data_dir} does not exist or is not a directory")
        return False
    if not os.access(data_dir, os.R_OK | os.X_OK):
        problems.append(f"PIPELINE_DATA_DIR {data_dir} is not readable")
        return False
    lake = settings.lake_dir.resolve()
    try:
        lake_bytes, lake_files = _tree_size(lake) if storage.is_remote(lake) or lake.is_dir() else (0, 0)
    except LakeStoreUnavailable as exc:  # the bucket of PIPELINE_LAKE_URL: what to check
        problems.append(str(exc))
        lake_bytes = lake_files = 0
    report["lake"] = {"path": str(lake), "bytes": lake_bytes, "files": lake_files}
    usage = shutil.disk_usage(data_dir)
    minimum = settings.metrics.min_free_disk_gb
    report["disk"] = {"free_bytes": usage.free, "free_gb": round(usage.free / _GB, 2), "min_free_gb": minimum}
    if usage.free < minimum * _GB:
        problems.append(
            f"only {usage.free / _GB:.2f} GB free under {data_dir} (PIPELINE_METRICS__MIN_FREE_DISK_GB={minimum})"
        )
    return True


def _warehouse_report(
    settings: PipelineSettings, report: dict[str, Any], problems: list[str], warnings: list[str]
) -> None:
    import duckdb

    from market_pipeline.core.lake import warehouse
    from market_pipeline.core.lake.warehouse import CatalogUnavailable, is_lock_conflict

    target = settings.warehouse
    path = target.describe()  # no password
    entry: dict[str, Any] = {"path": path}
    report["warehouse"] = entry
    if not target.exists():
        entry["status"] = "missing"
        problems.append(f"warehouse {path} does not exist: nothing has been materialized yet")
        return
    try:
        # The file at once (a held lock is reported, not waited for); a DuckLake by attaching its catalog.
        connection = (
            warehouse.connect(target, read_only=True)
            if target.is_ducklake
            else duckdb.connect(str(target.path), read_only=True)
        )
        with connection as con:
            tables = con.execute(
                "SELECT table_schema || '.' || table_name FROM information_schema.tables "
                "WHERE table_catalog = current_database() ORDER BY 1"
            ).fetchall()
            entry["tables"] = [t for (t,) in tables]
            if "main.pipeline_metrics" in entry["tables"]:
                rows, days, latest = con.execute(
                    "SELECT count(*), count(DISTINCT dt), CAST(max(dt) AS VARCHAR) FROM main.pipeline_metrics"
                ).fetchone()
                report["pipeline_metrics"] = {"rows": rows, "days": days, "latest_dt": latest}
    except CatalogUnavailable as exc:
        entry["status"], entry["error"] = "unreachable", str(exc)
        problems.append(str(exc))
        return
    except duckdb.Error as exc:
        if is_lock_conflict(exc):
            entry["status"] = "busy"
            warnings.append(f"warehouse {path} is locked by a running writer; not inspected")
            return
        entry["status"] = (
            "corrupt"
            if isinstance(exc, (duckdb.SerializationException, duckdb.InvalidInputException, duckdb.InternalException))
            else "unreadable"
        )
        entry["error"] = str(exc).splitlines()[0]
        problems.append(f"warehouse {path} is {entry['status']}: {entry['error']}")
        return
    entry["status"] = "ok"


def _metrics_files_report(settings: PipelineSettings, report: dict[str, Any]) -> None:
    from market_pipeline.core.telemetry.otlp_json import FILE_PREFIX

    directory = (settings.data_dir / "metrics").resolve()
    files = sorted(directory.glob(f"{FILE_PREFIX}*.jsonl")) if directory.is_dir() else []
    report["metrics_files"] = {
        "path": str(directory),
        "files": len(files),
        "bytes": sum(f.stat().st_size for f in files),
        "latest": files[-1].name if files else None,
    }


def health_report() -> tuple[dict[str, Any], int]:
    """The report and the exit code."""
    from market_pipeline.settings import SettingsError, load_settings

    problems: list[str] = []
    check_warnings: list[str] = []  # failed WARN checks: exit EXIT_WARNINGS
    warnings: list[str] = []  # e.g. a busy warehouse: the pipeline working, exit 0
    report: dict[str, Any] = {"checked_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}
    try:
        settings = load_settings()  # once: the code location is built from these
    except SettingsError as exc:
        settings = None
        settings_problems = exc.problems
    else:
        settings_problems = []
    _dagster_report(report, problems, check_warnings, settings)
    problems.extend(settings_problems)
    if settings is not None and _disk_report(settings, report, problems):
        _warehouse_report(settings, report, problems, warnings)
        _metrics_files_report(settings, report)
    if problems:
        status, code = "attention", EXIT_FAILED
    elif check_warnings:
        status, code = "warnings", EXIT_WARNINGS
    else:
        status, code = "ok", EXIT_OK
    summary = {"status": status, "problems": problems, "warnings": check_warnings + warnings}
    return {**summary, **report}, code


def health_command() -> int:
    report, code = health_report()
    print(json.dumps(report, indent=2, sort_keys=False))
    return code


def health_check() -> tuple[dict[str, Any], bool]:
    """The report and whether the pipeline works (failed WARN checks are in the body, not an outage):
    `GET /health` of `market-pipeline serve`."""
    report, code = health_report()
    return report, code in (EXIT_OK, EXIT_WARNINGS)

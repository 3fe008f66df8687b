"""The Dagster instance's storage in a backup: its SQLite files, through SQLite's backup API.

With the default `dagster.yaml` (SQLite under $DAGSTER_HOME) the instance is `history/runs.db`,
`history/runs/index.db`, `history/runs/<run_id>.db` and `schedules/schedules.db`. Each is copied
with `sqlite3.Connection.backup`, which reads one consistent state even while the daemon or a run
writes (never a file copy, which could be torn). Compute logs (`storage/`) are not included.

An instance on PostgreSQL (`dagster_home/dagster.postgres.yaml`) is not copied: `pg_dump` is the
tool for it, and the manifest records that this backup does not hold it.
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import yaml

from market_pipeline.core.errors import ConfigurationError

INSTANCE_CONFIG = "dagster.yaml"
# Where Dagster's SQLite storage keeps its databases under $DAGSTER_HOME.
SQLITE_DIRS = ("history", "schedules")
_BUSY_TIMEOUT_SECONDS = 60.0


@dataclass(frozen=True)
class InstanceStorage:
    kind: str  # "sqlite" or the storage's name in dagster.yaml (e.g. "postgres")
    databases: tuple[Path, ...]  # relative to $DAGSTER_HOME; only for sqlite


def instance_storage(dagster_home: Path) -> InstanceStorage:
    """What the instance at `dagster_home` stores its runs, events and schedules in."""
    config_path = dagster_home / INSTANCE_CONFIG
    config: object = {}
    if config_path.is_file():
        try:
            config = yaml.safe_load(config_path.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigurationError(f"{config_path}: cannot read the Dagster instance config ({exc})") from None
    kind = _storage_kind(config)
    if kind != "sqlite":
        return InstanceStorage(kind, ())
    databases = sorted(
        path.relative_to(dagster_home)
        for directory in SQLITE_DIRS
        for path in (dagster_home / directory).rglob("*.db")
        if path.is_file()
    )
    return InstanceStorage(kind, tuple(databases))


def _storage_kind(config: object) -> str:
    """ "sqlite" for Dagster's default or `storage: sqlite:`, else the configured storage's name."""
    if not isinstance(config, dict):
        return "sqlite"
    storage = config.get("storage")
    if isinstance(storage, dict) and storage:
        return "sqlite" if "sqlite" in storage else next(iter(storage))
    for key in ("run_storage", "event_log_storage", "schedule_storage"):
        section = config.get(key)
        if isinstance(section, dict) and "sqlite" not in str(section.get("module", "sqlite")).lower():
            return str(section.get("module"))
    return "sqlite"


def backup_sqlite(source: Path, target: Path) -> None:
    """Copy the SQLite database `source` into the new file `target` with the backup API."""
    try:
        # closing(): `with sqlite3.connect()` alone commits but does not close.
        with (
            closing(sqlite3.connect(f"{source.as_uri()}?mode=ro", uri=True, timeout=_BUSY_TIMEOUT_SECONDS)) as src,
            closing(sqlite3.connect(target)) as dst,
        ):
            src.backup(dst)
    except sqlite3.Error as exc:
        raise ConfigurationError(f"{source}: cannot back up this Dagster instance database ({exc})") from None

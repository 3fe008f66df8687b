"""`market-pipeline backup --to DIR` and `market-pipeline restore FROM` (logic in core/backup/)."""

from __future__ import annotations

import os
from pathlib import Path

from market_pipeline.cli.common import EXIT_OK, EXIT_USAGE, CliError
from market_pipeline.core.backup.manifest import Manifest
from market_pipeline.core.errors import ConfigurationError


def backup_command(target_dir: Path, keep: int | None, encrypt: bool, wait_timeout: float) -> int:
    from market_pipeline.cli.dagster_instance import require_dagster_home
    from market_pipeline.core.backup.snapshot import BackupSources, create_backup, prune_snapshots
    from market_pipeline.core.backup.warehouse import LockWait
    from market_pipeline.core.security import crypto
    from market_pipeline.settings import load_settings

    settings = load_settings()
    if settings.warehouse.is_ducklake:
        raise ConfigurationError(
            f"PIPELINE_CATALOG_URL: the warehouse is a {settings.warehouse.describe()}, which `backup` does not "
            "copy: back its catalog up with pg_dump and its data files with the bucket's versioning or a copy "
            "(docs/operations.md, Backups); `backup` snapshots only a warehouse.duckdb"
        )
    data_dir = settings.data_dir.resolve()
    if not data_dir.is_dir():
        raise ConfigurationError(f"PIPELINE_DATA_DIR {data_dir} is not a directory: nothing to back up")
    sources = BackupSources(data_dir, require_dagster_home(), settings.capture_dir, settings.lake_url)
    key = crypto.default_master_key() if encrypt else None
    print(f"backing up {data_dir} and DAGSTER_HOME {sources.dagster_home} into {target_dir}", flush=True)
    wait = LockWait(timeout_seconds=wait_timeout, notify=lambda message: print(f"  {message}", flush=True))
    snapshot, manifest = create_backup(sources, target_dir.resolve(), wait, master_key=key)
    _print_parts(manifest)
    print(f"backup {snapshot} ({len(manifest.files)} files{', encrypted' if encrypt else ''})")
    if keep is not None:
        for removed in prune_snapshots(target_dir.resolve(), keep):
            print(f"removed older backup {removed} (--keep {keep})")
    return EXIT_OK


def restore_command(snapshot: Path, allow_nonempty_dagster_home: bool) -> int:
    from market_pipeline.core.backup.restore import RestoreTargets, restore_backup
    from market_pipeline.settings import load_settings

    if not snapshot.is_dir():
        raise CliError(f"{snapshot}: no such backup directory", EXIT_USAGE)
    settings = load_settings()
    targets = RestoreTargets(settings.data_dir.resolve(), _dagster_home(), allow_nonempty_dagster_home)
    print(f"verifying {snapshot}, then restoring into {targets.data_dir} and DAGSTER_HOME {targets.dagster_home}")
    manifest = restore_backup(snapshot, targets)
    _print_parts(manifest)
    print(f"restored {len(manifest.files)} files from the backup of {manifest.created_at}; every sha256 matched")
    if manifest.parts.get("warehouse", {}).get("lake_views_not_copied"):
        print("the lake views (raw.*, books.*) come back with the next `market-pipeline run` once the lake is there")
    return EXIT_OK


def _dagster_home() -> Path | None:
    value = os.environ.get("DAGSTER_HOME", "").strip()
    if not value:
        return None
    if not Path(value).is_absolute():
        raise CliError(f"DAGSTER_HOME={value} must be an absolute path", EXIT_USAGE)
    return Path(value)


def _print_parts(manifest: Manifest) -> None:
    for name, part in manifest.parts.items():
        if not part.get("included"):
            print(f"  {name:<17} not included: {part.get('reason')}")
            continue
        files = [entry for entry in manifest.files if entry.part == name]
        size = sum(entry.content_size for entry in files)
        detail = f"{len(files)} file(s), {size:,} bytes"
        if name == "warehouse":
            detail += f", {len(part.get('tables', {}))} table(s)"
        print(f"  {name:<17} {detail}")
        for path in part.get("skipped_in_progress", []):
            print(f"  {'':<17} skipped {path} (still being written; it goes into the next backup)")

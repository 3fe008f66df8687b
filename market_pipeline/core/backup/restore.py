"""`market-pipeline restore FROM`: verify a snapshot, then put it back into an empty data dir.

Order, so that a bad snapshot writes nothing: (1) the manifest is read and every stored file's
size and SHA-256 checked, and a file the manifest does not list is refused too; (2) the targets
are checked: the data dir must be empty (or not exist), DAGSTER_HOME must hold nothing but its
`dagster.yaml` unless the caller allows more, and no restored file may exist already; (3) every
file is copied (decrypted, with an encrypted backup) into a staging directory inside its target
root and its content's SHA-256 checked again, and the warehouse's row counts against the
manifest; (4) only then are the staged files renamed into place. A failure before (4) leaves the
targets as they were.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import duckdb

from market_pipeline.core.backup.instance import INSTANCE_CONFIG
from market_pipeline.core.backup.manifest import MANIFEST_FILE, FileEntry, Manifest, read_manifest, sha256_file
from market_pipeline.core.errors import IntegrityError, UsageError
from market_pipeline.core.lake.paths import make_private_dirs
from market_pipeline.core.security import crypto


class SnapshotTampered(IntegrityError):
    """A file of a snapshot that does not match its manifest (or is not in it)."""


@dataclass(frozen=True)
class RestoreTargets:
    data_dir: Path
    dagster_home: Path | None
    allow_nonempty_dagster_home: bool = False  # restore beside other files; existing files are never replaced


def verify_snapshot(snapshot: Path) -> Manifest:
    """The manifest of `snapshot` once every stored file matches it; SnapshotTampered naming the first that does not."""
    manifest = read_manifest(snapshot)
    listed = {entry.path for entry in manifest.files}
    for entry in manifest.files:
        stored = snapshot / entry.path
        if not stored.is_file():
            raise SnapshotTampered(f"{stored}: listed in the manifest ({entry.part}) but missing")
        size, sha = sha256_file(stored)
        if (size, sha) != (entry.size, entry.sha256):
            raise SnapshotTampered(
                f"{stored}: does not match the manifest ({entry.part}: {size} bytes, sha256 {sha[:12]}..., "
                f"expected {entry.size} bytes, sha256 {entry.sha256[:12]}...); nothing was restored"
            )
    for path in sorted(snapshot.rglob("*")):
        rel = path.relative_to(snapshot).as_posix()
        if path.is_file() and rel != MANIFEST_FILE and rel not in listed:
            raise SnapshotTampered(f"{path}: not listed in the manifest; nothing was restored")
    return manifest


def restore_backup(snapshot: Path, targets: RestoreTargets, master_key: bytes | None = None) -> Manifest:
    """Verify `snapshot` and restore it into `targets`; returns its manifest."""
    manifest = verify_snapshot(snapshot)
    key = None
    if manifest.encrypted:
        key = master_key if master_key is not None else crypto.default_master_key()
    roots = _target_roots(manifest, targets)
    staging = {name: root / f".market_pipeline-restore-{os.getpid()}" for name, root in roots.items()}
    try:
        staged = [(_stage(snapshot, entry, staging[entry.root], key), entry) for entry in manifest.files]
        _check_warehouse_rows(manifest, staging["data_dir"])
        for path, entry in staged:
            final = roots[entry.root] / entry.target
            make_private_dirs(final.parent)
            os.rename(path, final)
    finally:
        for path in staging.values():
            shutil.rmtree(path, ignore_errors=True)
    return manifest


def _target_roots(manifest: Manifest, targets: RestoreTargets) -> dict[str, Path]:
    """The restore roots by name, after refusing any that holds something."""
    data_dir = targets.data_dir
    if data_dir.exists():
        if not data_dir.is_dir():
            raise UsageError(f"restore target {data_dir} (PIPELINE_DATA_DIR) is not a directory")
        existing = sorted(data_dir.iterdir())
        if existing:
            raise UsageError(
                f"restore target {data_dir} (PIPELINE_DATA_DIR) is not empty: it holds {len(existing)} entries, "
                f"e.g. {existing[0].name}; restore only into an empty or new directory"
            )
    roots = {"data_dir": data_dir}
    home_entries = [entry for entry in manifest.files if entry.root == "dagster_home"]
    home = targets.dagster_home
    if not home_entries:
        make_private_dirs(data_dir)
        return roots
    if home is None:
        raise UsageError("the backup holds a Dagster instance: set DAGSTER_HOME to the directory to restore it into")
    if home.is_dir() and not targets.allow_nonempty_dagster_home:
        others = sorted(path.name for path in home.iterdir() if path.name != INSTANCE_CONFIG)
        if others:
            raise UsageError(
                f"DAGSTER_HOME {home} holds more than {INSTANCE_CONFIG} ({', '.join(others[:5])}); restore the "
                "instance into an empty one, or pass --allow-nonempty-dagster-home to restore beside those files"
            )
    clashes = [str(home / entry.target) for entry in home_entries if (home / entry.target).exists()]
    if clashes:
        raise UsageError(f"DAGSTER_HOME {home} already has {', '.join(clashes[:5])}; restore never replaces a file")
    make_private_dirs(data_dir)  # only now that every target passed
    make_private_dirs(home)
    roots["dagster_home"] = home
    return roots


def _stage(snapshot: Path, entry: FileEntry, staging: Path, key: bytes | None) -> Path:
    """Copy (or decrypt) one file into `staging` and check its content against the manifest."""
    stored = snapshot / entry.path
    path = staging / entry.target
    make_private_dirs(path.parent)
    if key is None:
        shutil.copyfile(stored, path)
        os.chmod(path, 0o600)
    else:
        crypto.decrypt_file(stored, path, key)
    size, sha = sha256_file(path)
    if (size, sha) != (entry.content_size, entry.content_sha256):
        raise SnapshotTampered(f"{stored}: its content does not match the manifest's sha256; nothing was restored")
    return path


def _check_warehouse_rows(manifest: Manifest, staging: Path) -> None:
    """The restored warehouse has every table of the manifest with its row count."""
    part = manifest.parts.get("warehouse", {})
    if not part.get("included"):
        return
    expected = dict(part.get("tables", {}))  # type: ignore[call-overload]
    with duckdb.connect(str(staging / "warehouse.duckdb"), read_only=True) as con:
        names = con.execute("SELECT schema_name, table_name FROM duckdb_tables() WHERE NOT internal").fetchall()
        found = {
            f"{schema}.{table}": con.execute(f'SELECT count(*) FROM "{schema}"."{table}"').fetchone()[0]
            for schema, table in names
        }
    if found != expected:
        raise IntegrityError(f"the restored warehouse's tables {found} differ from the manifest's {expected}")

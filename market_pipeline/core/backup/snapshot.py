"""`market-pipeline backup`: a consistent, timestamped snapshot of what cannot be downloaded again.

    DIR/market_pipeline-20240304T020000Z/
      manifest.json                      written last (manifest.py)
      data/warehouse.duckdb              the warehouse's tables (warehouse.py)
      dagster_home/history/runs.db ...   the instance's SQLite databases (instance.py)
      data/lake/checkpoints/...          end-of-day book checkpoints
      data/audit/audit.jsonl             the audit trail
      data/alerts/alerts.jsonl           every alert sent (its keys stop resends)
      data/captures/... or the capture dir's place under the data dir: PIPELINE_CAPTURE_DIR

Not in it, because it can be made again: the lake's Parquet files (re-import and rebuild the
days), reports, metrics, the source caches, Dagster's compute logs.

The snapshot is assembled in a hidden `.market_pipeline-<time>.partial-<pid>` sibling and renamed
into place once its manifest is written, so a name `market_pipeline-*` with a manifest is always a
finished backup. With a master key every file is stored encrypted (`<name>.enc`, the envelope
format of core/security/crypto.py): the plaintext copy exists only while it is hashed and sealed.
"""

from __future__ import annotations

import datetime as dt
import errno
import os
import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from market_pipeline.core.backup.instance import backup_sqlite, instance_storage
from market_pipeline.core.backup.manifest import (
    MANIFEST_FILE,
    SNAPSHOT_PREFIX,
    BackupManifestError,
    FileEntry,
    Manifest,
    read_manifest,
    sha256_file,
)
from market_pipeline.core.backup.warehouse import LockWait, copy_warehouse
from market_pipeline.core.lake.paths import audit_log_path, make_private_dirs
from market_pipeline.core.security import crypto

ENCRYPTED_SUFFIX = ".enc"
CAPTURE_PARTIAL_SUFFIX = ".partial"  # the capture hour still being recorded (vendors/live_capture/writer.py)
TEMP_MARKER = ".tmp-"  # `.<name>.tmp-<pid>-<uuid>`: an atomic write in progress (core/lake/files.py)
_COPY_BLOCK = 1 << 20


@dataclass(frozen=True)
class BackupSources:
    data_dir: Path
    dagster_home: Path | None
    capture_dir: Path | None = None
    remote_lake: str | None = None  # PIPELINE_LAKE_URL: the checkpoints are objects in its bucket


@dataclass
class _SnapshotWriter:
    """Puts files into the unfinished snapshot directory and records them in the manifest."""

    root: Path
    master_key: bytes | None
    manifest: Manifest

    def add(self, part: str, target_root: str, target: PurePosixPath, produce: Callable[[Path], object]) -> object:
        """Store one file: `produce(path)` writes its plaintext, which is hashed and maybe sealed."""
        stored = PurePosixPath("data" if target_root == "data_dir" else "dagster_home") / target
        plain = self.root / stored
        make_private_dirs(plain.parent)
        result = produce(plain)
        os.chmod(plain, 0o600)
        plain_size, plain_sha = sha256_file(plain)
        if self.master_key is None:
            entry = FileEntry(part, stored.as_posix(), target_root, target.as_posix(), plain_size, plain_sha)
        else:
            sealed = plain.with_name(plain.name + ENCRYPTED_SUFFIX)
            crypto.encrypt_file(plain, sealed, self.master_key)
            plain.unlink()
            size, sha = sha256_file(sealed)
            stored_path = stored.with_name(stored.name + ENCRYPTED_SUFFIX).as_posix()
            entry = FileEntry(part, stored_path, target_root, target.as_posix(), size, sha, plain_size, plain_sha)
        self.manifest.files.append(entry)
        return result

    def add_tree(self, part: str, source_dir: Path, target_dir: PurePosixPath) -> dict[str, object]:
        """Every finished file under `source_dir`; writes in progress are named in `skipped_in_progress`."""
        count = size = 0
        skipped: list[str] = []
        for path in sorted(p for p in source_dir.rglob("*") if p.is_file()):
            rel = PurePosixPath(path.relative_to(source_dir).as_posix())
            if path.name.endswith(CAPTURE_PARTIAL_SUFFIX) or (path.name.startswith(".") and TEMP_MARKER in path.name):
                skipped.append(str(path))
                continue
            self.add(part, "data_dir", target_dir / rel, lambda plain, src=path: shutil.copyfile(src, plain))
            count += 1
            size += self.manifest.files[-1].content_size
        info: dict[str, object] = {"included": True, "source": str(source_dir), "files": count, "bytes": size}
        if skipped:
            info["skipped_in_progress"] = skipped
        return info


def copy_complete_lines(source: Path, target: Path) -> None:
    """Copy an append-only JSON-lines file up to its last complete line (a line being appended
    right now goes into the next backup)."""
    remaining = source.stat().st_size
    complete = written = 0
    with open(source, "rb") as src, open(target, "wb") as dst:
        while remaining > 0 and (block := src.read(min(_COPY_BLOCK, remaining))):
            dst.write(block)
            newline = block.rfind(b"\n")
            if newline >= 0:
                complete = written + newline + 1
            written += len(block)
            remaining -= len(block)
        dst.truncate(complete)


def snapshot_name(now: dt.datetime) -> str:
    return SNAPSHOT_PREFIX + now.astimezone(dt.UTC).strftime("%Y%m%dT%H%M%SZ")


def create_backup(
    sources: BackupSources,
    backup_dir: Path,
    wait: LockWait,
    master_key: bytes | None = None,
    now: dt.datetime | None = None,
) -> tuple[Path, Manifest]:
    """Write one snapshot of `sources` under `backup_dir`; returns its directory and manifest."""
    now = now or dt.datetime.now(dt.UTC)
    make_private_dirs(backup_dir)
    name = snapshot_name(now)
    partial = backup_dir / f".{name}.partial-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    make_private_dirs(partial)
    manifest = Manifest(
        created_at=now.isoformat(timespec="microseconds"),
        encrypted=master_key is not None,
        sources={
            "data_dir": str(sources.data_dir),
            "dagster_home": str(sources.dagster_home) if sources.dagster_home else None,
            "capture_dir": str(sources.capture_dir) if sources.capture_dir else None,
        },
    )
    writer = _SnapshotWriter(partial, master_key, manifest)
    try:
        manifest.parts["warehouse"] = _warehouse_part(writer, sources.data_dir, wait)
        manifest.parts["dagster_instance"] = _instance_part(writer, sources.dagster_home)
        manifest.parts["checkpoints"] = (
            {
                "included": False,
                "reason": f"the lake is {sources.remote_lake}: back the bucket up (versioning, replication)",
            }
            if sources.remote_lake
            else _tree_part(writer, "checkpoints", sources.data_dir, sources.data_dir / "lake" / "checkpoints")
        )
        manifest.parts["audit"] = _lines_part(writer, "audit", sources.data_dir, audit_log_path(sources.data_dir))
        manifest.parts["alerts"] = _lines_part(
            writer, "alerts", sources.data_dir, sources.data_dir / "alerts" / "alerts.jsonl"
        )
        manifest.parts["captures"] = _captures_part(writer, sources)
        (partial / MANIFEST_FILE).write_text(manifest.to_json(), encoding="utf-8")
        os.chmod(partial / MANIFEST_FILE, 0o600)
        _fsync_tree(partial)
        final = _rename_to_free_name(partial, backup_dir, name)
        _fsync_dir(backup_dir)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return final, manifest


def _rename_to_free_name(partial: Path, backup_dir: Path, name: str) -> Path:
    """Rename the finished snapshot to `name`, or `name-2`, `name-3`... when a backup of the same
    second holds it. The rename itself claims the name: a snapshot directory is never empty, so
    renaming onto one fails (ENOTEMPTY), and concurrent backups each end under a name of their own."""
    candidate, n = backup_dir / name, 1
    while True:
        try:
            os.rename(partial, candidate)
            return candidate
        except OSError as exc:
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
        n += 1
        candidate = backup_dir / f"{name}-{n}"


def _warehouse_part(writer: _SnapshotWriter, data_dir: Path, wait: LockWait) -> dict[str, object]:
    warehouse = data_dir / "warehouse.duckdb"
    if not warehouse.is_file():
        return {"included": False, "reason": f"no warehouse at {warehouse}"}
    info = writer.add(
        "warehouse", "data_dir", PurePosixPath(warehouse.name), lambda plain: copy_warehouse(warehouse, plain, wait)
    )
    return {
        "included": True,
        "source": str(warehouse),
        "method": "ATTACH READ_ONLY, tables copied into a new file",
        **info,
    }


def _instance_part(writer: _SnapshotWriter, dagster_home: Path | None) -> dict[str, object]:
    if dagster_home is None:
        return {"included": False, "reason": "DAGSTER_HOME was not given"}
    storage = instance_storage(dagster_home)
    if storage.kind != "sqlite":
        return {
            "included": False,
            "storage": storage.kind,
            "reason": f"the instance stores its runs in {storage.kind}, not in files under DAGSTER_HOME: "
            "back that database up with its own tool (pg_dump for PostgreSQL)",
        }
    for rel in storage.databases:
        source = dagster_home / rel
        writer.add(
            "dagster_instance",
            "dagster_home",
            PurePosixPath(rel.as_posix()),
            lambda plain, src=source: backup_sqlite(src, plain),
        )
    return {
        "included": True,
        "storage": "sqlite",
        "source": str(dagster_home),
        "method": "sqlite3 backup API",
        "databases": len(storage.databases),
    }


def _tree_part(writer: _SnapshotWriter, part: str, data_dir: Path, source_dir: Path) -> dict[str, object]:
    if not source_dir.is_dir():
        return {"included": False, "reason": f"no directory {source_dir}"}
    return writer.add_tree(part, source_dir, PurePosixPath(source_dir.relative_to(data_dir).as_posix()))


def _lines_part(writer: _SnapshotWriter, part: str, data_dir: Path, source: Path) -> dict[str, object]:
    if not source.is_file():
        return {"included": False, "reason": f"no file {source}"}
    target = PurePosixPath(source.relative_to(data_dir).as_posix())
    writer.add(part, "data_dir", target, lambda plain: copy_complete_lines(source, plain))
    return {"included": True, "source": str(source), "bytes": writer.manifest.files[-1].content_size}


def _captures_part(writer: _SnapshotWriter, sources: BackupSources) -> dict[str, object]:
    """PIPELINE_CAPTURE_DIR goes back to its own place under the data dir, else to `captures/`."""
    capture_dir = sources.capture_dir
    if capture_dir is None:
        return {"included": False, "reason": "PIPELINE_CAPTURE_DIR is not set"}
    if not capture_dir.is_dir():
        return {"included": False, "reason": f"PIPELINE_CAPTURE_DIR {capture_dir} is not a directory"}
    data_dir = sources.data_dir.resolve()
    resolved = capture_dir.resolve()
    inside = resolved.is_relative_to(data_dir) and resolved != data_dir
    target = PurePosixPath(resolved.relative_to(data_dir).as_posix() if inside else "captures")
    return writer.add_tree("captures", capture_dir, target)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(root: Path) -> None:
    """Flush every file and directory of the snapshot before it is renamed into place."""
    for directory, _dirs, files in os.walk(root):
        for name in files:
            with open(Path(directory) / name, "rb") as fh:
                os.fsync(fh.fileno())
        _fsync_dir(Path(directory))


def prune_snapshots(backup_dir: Path, keep: int) -> list[Path]:
    """Delete all but the newest `keep` snapshots in `backup_dir`; returns the deleted ones.

    Only directories named `market_pipeline-*` whose manifest this tool wrote count; anything
    else in `backup_dir` is left alone.
    """
    if keep < 1:
        raise ValueError(f"keep must be at least 1, got {keep}")
    snapshots: list[tuple[str, Path]] = []
    for path in backup_dir.iterdir():
        if not (path.is_dir() and path.name.startswith(SNAPSHOT_PREFIX)):
            continue
        try:
            snapshots.append((read_manifest(path).created_at, path))
        except (BackupManifestError, FileNotFoundError):  # not ours, or pruned by a concurrent backup
            continue
    snapshots.sort(reverse=True)
    removed = [path for _created, path in snapshots[keep:]]
    for path in removed:
        try:
            shutil.rmtree(path)
        except FileNotFoundError:  # a concurrent backup's --keep removed it first
            pass
    return removed

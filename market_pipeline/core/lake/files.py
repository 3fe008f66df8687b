"""Atomic file writes: readers see the old file or the new one, never half of either.

Every file written here is private (mode 0600, in directories created 0700) and, inside an
`audit_scope`, recorded in the audit trail (market_pipeline/core/security/audit.py).

A writer killed mid-way (kill -9, power loss, OOM killer) leaves its temporary sibling
`.<name>.tmp-<pid>-<uuid>` behind; the next write of the same file removes every such leftover
whose process is gone (`remove_stale_temp_files`).

An object of a remote lake (core/lake/storage.py) is written the same way but its temporary file
is local (the process's upload directory) and the commit is the object's PUT, not a rename.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import polars as pl

from market_pipeline.core.lake import storage
from market_pipeline.core.lake.paths import make_private_dirs
from market_pipeline.core.security.audit import audit_write

PRIVATE_FILE_MODE = 0o600

_log = logging.getLogger(__name__)
# Temporary files this process is writing right now (another thread may write the same file).
_ACTIVE: set[str] = set()
_ACTIVE_LOCK = threading.Lock()


def _temp_prefix(final: Path) -> str:
    return f".{final.name}.tmp-"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    except OSError:
        return False
    return True


def _is_stale(name: str, prefix: str) -> bool:
    """Whether temporary file `name` was left by a writer that no longer runs."""
    with _ACTIVE_LOCK:
        if name in _ACTIVE:
            return False
    owner, sep, _ = name[len(prefix) :].partition("-")
    if not sep or not owner.isdigit():
        return True  # written before temp names carried their pid: no writer of that version runs now
    pid = int(owner)
    return pid == os.getpid() or not _pid_alive(pid)  # our own pid but not in _ACTIVE: a dead namesake


def remove_stale_temp_files(final: Path) -> list[Path]:
    """Remove the temporary siblings of `final` that writers killed mid-way left behind.

    A temporary file of a writer that is still running (another process, or another thread of this
    one) is kept. Returns the removed paths.
    """
    prefix = _temp_prefix(final)
    removed: list[Path] = []
    try:
        entries = [entry.name for entry in os.scandir(final.parent) if entry.name.startswith(prefix)]
    except FileNotFoundError:
        return removed
    for name in entries:
        if _is_stale(name, prefix):
            path = final.parent / name
            path.unlink(missing_ok=True)
            removed.append(path)
            _log.info("removed %s, left by a write that did not finish", path)
    return removed


def remove_dead_owners_dirs(parent: Path, prefix: str) -> list[Path]:
    """Remove the directories `<prefix><pid>` or `<prefix><pid>-...` under `parent` whose process no
    longer runs: scratch a process left behind (killed, or one whose directory outlives it).
    Returns them."""
    removed: list[Path] = []
    try:
        entries = [entry for entry in os.scandir(parent) if entry.name.startswith(prefix) and entry.is_dir()]
    except FileNotFoundError:
        return removed
    for entry in entries:
        owner = entry.name[len(prefix) :].partition("-")[0]
        if owner.isdigit() and int(owner) != os.getpid() and not _pid_alive(int(owner)):
            shutil.rmtree(entry.path, ignore_errors=True)
            removed.append(Path(entry.path))
            _log.info("removed %s, left by a process that did not finish", entry.path)
    return removed


@contextmanager
def atomic_path(final: Path) -> Iterator[Path]:
    """Yield a temporary sibling of `final`; on success rename it over `final`.

    The temporary file lives in the same directory so the rename never crosses a filesystem.
    On failure the temporary file is removed and `final` is left as it was.

    `final` gets mode 0600 whatever the writer did. While it is written the temporary file has the
    process umask's mode (0600 under the pipeline's entry points, which set umask 077) inside a
    directory created 0700. The writer creates the temporary file itself (some open it O_EXCL).
    """
    if storage.is_remote(final):
        with _uploaded(final) as tmp:  # type: ignore[arg-type]
            yield tmp
        return
    make_private_dirs(final.parent)
    tmp = final.with_name(f"{_temp_prefix(final)}{os.getpid()}-{uuid.uuid4().hex}")
    with _ACTIVE_LOCK:
        _ACTIVE.add(tmp.name)
    try:
        remove_stale_temp_files(final)
        yield tmp
        os.chmod(tmp, PRIVATE_FILE_MODE)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
        with _ACTIVE_LOCK:
            _ACTIVE.discard(tmp.name)
    audit_write(final, final.stat().st_size)


@contextmanager
def _uploaded(final: Any) -> Iterator[Path]:
    """`atomic_path` for an object of a remote lake: a local temporary file, uploaded whole on success."""
    tmp = storage.upload_temp_path(final)
    try:
        yield tmp
        size = tmp.stat().st_size
        storage.upload(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
    audit_write(final, size)


def write_atomic(final: Path, writer: Callable[[Path], None]) -> int:
    """Write `final` through `writer(tmp_path)` atomically; returns the bytes written."""
    with atomic_path(final) as tmp:
        writer(tmp)
    return final.stat().st_size


def write_parquet_atomic(df: pl.DataFrame, final: Path) -> int:
    """A plain Parquet file outside the lake (the vendors' caches): never encrypted."""
    return write_atomic(final, lambda tmp: df.write_parquet(tmp, compression="zstd", statistics=True))


def write_text_atomic(final: Path, text: str) -> int:
    return write_atomic(final, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def copy_file_atomic(source: Path, final: Path) -> int:
    """Copy `source` to `final` atomically (private mode, audited); returns the bytes written."""
    return write_atomic(final, lambda tmp: shutil.copyfile(source, tmp))


def link_file_atomic(source: Path, final: Path) -> int:
    """Make `final` the same file as `source` atomically (private mode, audited): a hard link, no
    byte copied, or a copy where no link can be made (another filesystem, a remote lake's upload
    directory); returns the file's bytes. Only for a `source` nothing rewrites in place: every
    write of the lake and of the vendors' caches replaces its file by a rename, so the two names
    part when either is written again."""

    def place(tmp: Path) -> None:
        try:
            os.link(source, tmp)
        except OSError:
            shutil.copyfile(source, tmp)

    return write_atomic(final, place)

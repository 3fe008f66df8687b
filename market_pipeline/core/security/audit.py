"""The audit trail: one JSON line per read or write of lake data.

    $PIPELINE_DATA_DIR/audit/audit.jsonl
    {"time": "2024-03-02T00:00:01.123456+00:00", "component": "raw.import", "action": "write",
     "partition": {"dt": "2024-03-01", "instrument": "BINANCE:BTC-USDT", "table": "trades"},
     "path": "/srv/data/lake/raw/trades/.../data.parquet", "bytes": 123456}

Who and what come from the innermost `audit_scope(component, data_dir, dt=..., instrument=...)`
around the work, so the write helpers (`lake/files.py`) need no extra arguments: every atomic
write inside a scope is recorded there, and readers call `audit_read(path)` once per file. Outside
any scope nothing is recorded.

Append-only and safe with concurrent step processes: the file is opened with O_APPEND and each
line goes out in one `os.write` call, so lines from different processes never interleave. Every
line passes through `scrub()` first, so no secret reaches the trail.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path

from market_pipeline.core.lake.paths import audit_log_path, make_private_dirs
from market_pipeline.core.security.scrub import scrub

AUDIT_FILE_MODE = 0o600


@dataclass(frozen=True)
class AuditScope:
    log_path: Path
    component: str
    partition: dict[str, str]


_current: ContextVar[AuditScope | None] = ContextVar("market_pipeline_audit_scope", default=None)


@contextmanager
def audit_scope(component: str, data_dir: Path | None = None, **partition: object) -> Iterator[None]:
    """Record lake reads and writes inside this block for `component` (e.g. "raw.import",
    "book.rebuild", "quality") and `partition` (dt=..., instrument=..., any other keys).

    A nested scope inherits the outer scope's data_dir and partition keys and may add to them.
    """
    outer = _current.get()
    if data_dir is not None:
        log_path = audit_log_path(Path(data_dir))
    elif outer is not None:
        log_path = outer.log_path
    else:
        raise ValueError(f"audit_scope({component!r}) needs data_dir when no outer scope is active")
    keys = {name: _text(value) for name, value in partition.items() if value is not None}
    merged = {**(outer.partition if outer else {}), **keys}
    token = _current.set(AuditScope(log_path, component, merged))
    try:
        yield
    finally:
        _current.reset(token)


def audit_read(path: Path) -> None:
    """Record a read of the file at `path` (bytes: its size). A missing file is not recorded:
    the reader reports it."""
    try:
        size = path.stat().st_size
    except OSError:
        return
    _record("read", path, size)


def audit_write(path: Path, size: int) -> None:
    """Record that `size` bytes were written to `path` (called by the lake write helpers)."""
    _record("write", path, size)


def _text(value: object) -> str:
    return value.isoformat() if isinstance(value, dt.date) else str(value)


def _record(action: str, path: Path, size: int) -> None:
    scope = _current.get()
    if scope is None:
        return
    entry = {
        "time": dt.datetime.now(dt.UTC).isoformat(timespec="microseconds"),
        "component": scope.component,
        "action": action,
        "partition": scope.partition,
        "path": str(path),
        "bytes": size,
    }
    _append_line(scope.log_path, json.dumps(scrub(entry), separators=(",", ":")) + "\n")


def _append_line(log_path: Path, line: str) -> None:
    make_private_dirs(log_path.parent)
    data = line.encode("utf-8")
    fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, AUDIT_FILE_MODE)
    try:
        written = os.write(fd, data)  # one call: appended whole, never interleaved with another
    finally:
        os.close(fd)
    if written != len(data):
        raise OSError(f"audit trail {log_path}: short write ({written} of {len(data)} bytes)")

"""Scratch under PIPELINE_DATA_DIR that a finished run leaves: found, sized and removed.

A run's scratch is what it needs only while it runs:
- `runs/<run_id>/`: the whole data dir of each step of the run with PIPELINE_SCRATCH_PER_RUN
  (its vendor caches, upload and spill files, audit and metrics files);
- `sources/s3/<table>/exchange=X/symbol=Y/dt=D/`: the S3 vendor's downloads of a day, which the raw
  import has validated into the lake (a re-run downloads them again);
- `tmp/lake-copies/run-<run_id>/`: the copies of remote lake objects a run keeps for its later steps
  (core/lake/local_copies.py), removed when the run ends, whatever its outcome (they are the
  bucket's objects); `tmp/lake-copies/<step>/`: a step's own, which the step removes. Either is
  left only by a run or step process that was killed.

`remove_run_scratch` removes a run's own (`runs/<run_id>/` and its days' downloads) when it ends
successfully (the CLI after its run, the `finished_run_scratch` sensor for runs the daemon
launched); a failed run keeps them for inspection until `market-pipeline cleanup` (`kept_scratch`,
`remove_scratch`) removes them.
"""

from __future__ import annotations

import datetime as dt
import shutil
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

RUNS_DIR = "runs"
S3_DOWNLOADS = Path("sources") / "s3"
LAKE_COPIES = Path("tmp") / "lake-copies"


@dataclass(frozen=True)
class ScratchEntry:
    """One directory of scratch: its path, what it is, the run it belongs to (when known), bytes, age."""

    path: Path
    kind: str  # "run", "s3 download", "lake copies"
    run_id: str | None
    size: int
    modified: float  # the newest file's mtime (seconds since the epoch)

    def age_hours(self, now: float | None = None) -> float:
        return ((now if now is not None else time.time()) - self.modified) / 3600


def _tree(path: Path) -> tuple[int, float]:
    """(bytes, newest mtime) of the files under `path` (the directory's own mtime when empty)."""
    size, newest = 0, path.stat().st_mtime
    for file in path.rglob("*"):
        try:
            stat = file.stat()
        except FileNotFoundError:  # removed meanwhile
            continue
        newest = max(newest, stat.st_mtime)
        if file.is_file():
            size += stat.st_size
    return size, newest


def _entry(path: Path, kind: str, run_id: str | None = None) -> ScratchEntry:
    size, modified = _tree(path)
    return ScratchEntry(path, kind, run_id, size, modified)


def _download_days(data_dir: Path, days: Iterable[dt.date] | None = None) -> list[Path]:
    """The S3 vendor's day directories under `data_dir` (only those of `days` when given)."""
    wanted = None if days is None else {f"dt={day.isoformat()}" for day in days}
    root = data_dir / S3_DOWNLOADS
    found = sorted(p for p in root.glob("*/exchange=*/symbol=*/dt=*") if p.is_dir()) if root.is_dir() else []
    return [p for p in found if wanted is None or p.name in wanted]


def kept_scratch(data_dir: Path) -> list[ScratchEntry]:
    """Every piece of scratch under `data_dir`: run directories, S3 downloads, leftover lake copies."""
    runs = data_dir / RUNS_DIR
    entries = [_entry(p, "run", p.name) for p in sorted(runs.iterdir()) if p.is_dir()] if runs.is_dir() else []
    entries += [_entry(p, "s3 download") for p in _download_days(data_dir)]
    copies = data_dir / LAKE_COPIES
    if copies.is_dir():
        entries += [_entry(p, "lake copies") for p in sorted(copies.iterdir()) if p.is_dir()]
    return entries


def remove_scratch(entries: Iterable[ScratchEntry]) -> int:
    """Remove `entries`; returns the bytes freed. Day directories left empty are removed too."""
    freed = 0
    for entry in entries:
        shutil.rmtree(entry.path, ignore_errors=True)
        freed += entry.size
        _remove_empty_parents(entry.path)
    return freed


def _remove_empty_parents(path: Path) -> None:
    """`symbol=Y/` and `exchange=X/` directories a removed download leaves empty."""
    parent = path.parent
    while parent.name.startswith(("symbol=", "exchange=")):
        try:
            parent.rmdir()
        except OSError:  # not empty (or gone)
            return
        parent = parent.parent


def run_copies_name(run_id: str) -> str:
    """The directory under LAKE_COPIES of the lake copies the run `run_id` keeps."""
    return f"run-{run_id}"


def remove_run_copies(data_dir: Path, run_id: str) -> list[ScratchEntry]:
    """Remove the lake copies a finished run kept (any outcome: they are the bucket's objects)."""
    copies = data_dir / LAKE_COPIES / run_copies_name(run_id)
    entries = [_entry(copies, "lake copies", run_id)] if copies.is_dir() else []
    remove_scratch(entries)
    return entries


def remove_run_scratch(data_dir: Path, run_id: str, days: Iterable[dt.date]) -> list[ScratchEntry]:
    """Remove what a successful run leaves under `data_dir`: `runs/<run_id>/`, its lake copies and the
    S3 downloads of its days; returns what was removed."""
    run_dir = data_dir / RUNS_DIR / run_id
    entries = [_entry(run_dir, "run", run_id)] if run_dir.is_dir() else []
    entries += remove_run_copies(data_dir, run_id)
    entries += [_entry(p, "s3 download") for p in _download_days(data_dir, list(days))]
    remove_scratch(entries)
    return entries

"""The alert log: one JSON object per line in $PIPELINE_DATA_DIR/alerts/alerts.jsonl.

Append-only. Each line carries the alert's idempotency key, so whoever delivers alerts (the
daemon's sensors, the demo) reads the keys first and never sends the same alert twice. An
exclusive `flock` on a sibling lock file serialises writers across processes.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def alerts_path(data_dir: Path) -> Path:
    """The alert log under the pipeline's data directory."""
    return Path(data_dir) / "alerts" / "alerts.jsonl"


class AlertLog:
    def __init__(self, path: Path):
        self.path = path

    @contextmanager
    def locked(self) -> Iterator[AlertLog]:
        """Hold the log exclusively (read the keys, deliver, append) against other processes."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock = self.path.with_name(f".{self.path.name}.lock")
        with open(lock, "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield self
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def read(self) -> tuple[list[dict], list[str]]:
        """The records, and a problem message per line that is not a JSON object."""
        if not self.path.is_file():
            return [], []
        records, problems = [], []
        with open(self.path, encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as exc:
                    problems.append(f"{self.path}:{number}: not JSON ({exc.msg}); line ignored")
                    continue
                if not isinstance(record, dict):
                    problems.append(f"{self.path}:{number}: not a JSON object; line ignored")
                    continue
                records.append(record)
        return records, problems

    def append(self, record: dict) -> None:
        """Append one line and fsync it (call inside `locked()`)."""
        line = json.dumps(record, sort_keys=True, ensure_ascii=False) + "\n"
        with open(self.path, "a+b") as handle:
            # A crash mid-write can leave a last line without its newline: do not glue onto it.
            if handle.tell() > 0:
                handle.seek(-1, os.SEEK_END)
                if handle.read(1) != b"\n":
                    line = "\n" + line
            handle.write(line.encode("utf-8"))
            handle.flush()
            os.fsync(handle.fileno())

"""An exclusive lock on a vendor source's cache, shared by processes, that says when it waits.

The raw assets of one run may ask a source for the same day from separate processes (the UI's
multiprocess executor, `PIPELINE_WORKERS`): the first one fills the cache and the others wait for
it, then read what it wrote. A wait is published as a progress task (`core/telemetry/progress.py`),
so the CLI says what the step is waiting for instead of falling silent.
"""

from __future__ import annotations

import datetime as dt
import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from market_pipeline.core.instruments import Instrument
from market_pipeline.core.lake.paths import make_private_dirs
from market_pipeline.core.telemetry import progress


def day_lock_path(cache_root: Path, instrument: Instrument, day: dt.date) -> Path:
    """The lock file of one instrument-day of the source cache under `cache_root`."""
    return cache_root / ".locks" / f"{instrument.exchange}_{instrument.symbol}_{day.isoformat()}.lock"


@contextmanager
def cache_lock(path: Path, waiting_for: str) -> Iterator[None]:
    """Hold an exclusive `flock` on `path` (created, in private directories) while inside. While
    another process holds it, the task "waiting for another process <waiting_for>" runs."""
    make_private_dirs(path.parent)
    with open(path, "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            with progress.task(f"waiting for another process {waiting_for}"):
                fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)

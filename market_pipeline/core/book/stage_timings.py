"""Wall and CPU seconds per stage of a book rebuild (docs/architecture.md#performance)."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager


class StageTimings:
    """Wall and CPU seconds per stage; each stage is only ever timed from one thread.

    CPU time (of the timing thread) shows the work itself when other processes share the cores.
    """

    def __init__(self) -> None:
        self.wall: dict[str, float] = defaultdict(float)
        self.cpu: dict[str, float] = defaultdict(float)

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        wall, cpu = time.perf_counter(), time.thread_time()
        try:
            yield
        finally:
            self.wall[stage] += time.perf_counter() - wall
            self.cpu[stage] += time.thread_time() - cpu

    def report(self) -> dict[str, dict[str, float]]:
        return {
            "seconds": {stage: round(sec, 4) for stage, sec in sorted(self.wall.items())},
            "cpu_seconds": {stage: round(sec, 4) for stage, sec in sorted(self.cpu.items())},
        }

"""The vendor snapshot cadence of the synthetic source, checked without importing the numba kernel
(the settings import this module; `simulator.py` uses the same constants)."""

from __future__ import annotations

DAY_NS = 86_400_000_000_000
SNAPSHOT_GRID_NS = 100_000_000  # every snapshot cadence is a multiple of this; latencies are keyed by it


def check_snapshot_interval(interval_ns: int) -> None:
    """Raise ValueError unless the cadence is a whole number of grid steps that divides the day."""
    if interval_ns <= 0 or interval_ns % SNAPSHOT_GRID_NS or DAY_NS % interval_ns:
        raise ValueError(
            f"a snapshot interval of {interval_ns / 1e6:g} ms is not a multiple of "
            f"{SNAPSHOT_GRID_NS // 1_000_000} ms that divides the day (e.g. 100, 1000, 60000)"
        )

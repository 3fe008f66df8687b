"""Peak resident memory of this process, resettable so each stage reports its own peak.

Steps of an in-process run share one process, whose lifetime high-water mark would charge every
later stage with the biggest earlier one. Linux resets the mark when "5" is written to
/proc/self/clear_refs (it also resets `ru_maxrss`); elsewhere the lifetime peak is reported.
"""

from __future__ import annotations

import resource
import sys
from pathlib import Path

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def reset_peak_rss() -> bool:
    """Start a new peak-memory window; False when the platform cannot (the lifetime peak stays)."""
    try:
        _CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return True


def peak_rss_bytes() -> int:
    """Peak resident set size since the last reset (or since the process started)."""
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024  # reported in kB
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, kB elsewhere

"""Peak resident memory of this process, resettable so each stage reports its own peak, and
the release of memory the allocators hold free.

Steps of an in-process run share one process, whose lifetime high-water mark would charge every
later stage with the biggest earlier one. Linux resets the mark when "5" is written to
/proc/self/clear_refs (it also resets `ru_maxrss`); elsewhere the lifetime peak is reported.
"""

from __future__ import annotations

import ctypes
import functools
import os
import resource
import sys
from collections.abc import Callable
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


# glibc <malloc.h>: mallopt's parameter for the size from which a block gets its own mapping.
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 128 * 1024
# Reads made this many bytes at a time get their buffers from the C heap, used again and again;
# a larger block gets fresh pages from the kernel each time (a page fault a page), so the gzip
# readers inflate in pieces of this size.
HEAP_PIECE_BYTES = MMAP_THRESHOLD_BYTES // 2


@functools.cache
def _libc() -> ctypes.CDLL | None:
    """The symbols already loaded into this process, the C library's among them (no library
    search: `ctypes.util.find_library` runs `ldconfig`, and this runs when the package is imported)."""
    try:
        return ctypes.CDLL(None)
    except (OSError, TypeError):  # TypeError: Windows has no handle for the process itself
        return None


def _libc_function(name: str) -> Callable[..., int] | None:
    """A glibc function, or None where the C library has none (macOS, musl)."""
    return getattr(_libc(), name, None)


def fix_mmap_threshold() -> bool:
    """Give every block of MMAP_THRESHOLD_BYTES or more its own mapping, returned to the OS when
    freed; False where the C library cannot (not glibc).

    glibc starts there, but raises the threshold up to 32 MB whenever such a block is freed, so
    a process that works through days of batch-sized arrays (a few MB each) soon takes them from
    its heaps, which fragment and cannot shrink: after the raw imports of eight realistic days,
    the eight rebuilds in the same process peaked at 887, 940, 993 ... 1,108 MB. With the
    threshold fixed they peaked at 845-869 MB. Its cost, fresh pages for every batch, did not show
    in the whole graph's time (a realistic day, three alternating pairs: 29.0-33.8 s against
    29.6-36.3 s before); the readers that make the same arrays every batch now take them from
    `core/reused_arrays.ReusedArrays`, which spares those pages without growing the heaps.
    """
    mallopt = _libc_function("mallopt")
    return bool(mallopt is not None and mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))


def use_jemalloc_for_arrow() -> bool:
    """Make jemalloc the memory pool of Arrow's C++ code (its wheels' default is mimalloc) unless
    the user chose one (ARROW_DEFAULT_MEMORY_POOL, which child processes inherit); False when the
    user chose or Arrow is loaded already (its pool is set when it loads: `pa.set_memory_pool`
    would not reach the readers and writers, which take the C++ default).

    mimalloc keeps the pages of freed batches mapped: the whole graph of the bench day peaked at
    876 and 881 MB with it, 805 MB with jemalloc, and 722-765 MB with the C library's malloc,
    which cost the capture parse a fifth more CPU (5.1-5.4 s a million lines against 4.2-4.5 s;
    jemalloc's took 3.8-3.9 s, mimalloc's 3.9-4.6 s).
    """
    if "pyarrow" in sys.modules or os.environ.get("ARROW_DEFAULT_MEMORY_POOL"):
        return False
    os.environ["ARROW_DEFAULT_MEMORY_POOL"] = "jemalloc"
    return True


def release_free_memory() -> None:
    """Hand back to the OS the memory that Arrow's pool and the C heap hold free.

    The allocators keep freed memory for reuse, so a process that works through instrument-days
    one after another grew with every day: after a realistic day's rebuild ~300 MB stayed
    resident unused, and three days in a row peaked at 944, 1025 and 1045 MB. Released after each
    instrument-day, the three peaked at ~855 MB each.
    """
    import pyarrow as pa  # here, not at import: the package's import sets up the allocator first

    pa.default_memory_pool().release_unused()
    trim = _libc_function("malloc_trim")
    if trim is not None:
        trim(0)

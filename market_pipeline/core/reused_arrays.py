"""`ReusedArrays`: batch-sized arrays whose memory is handed out again once nothing refers to it.

Every block of 128 KB or more gets fresh pages from the kernel (`telemetry.memory.
fix_mmap_threshold`, which keeps a process's memory from growing with the days it works
through), and a fresh page costs a page fault, about 3 us on the bench machine. A reader that
makes the same few arrays for every batch (the rebuild's ticks and lots, a Tardis block's
columns) paid that for every page of every batch: 135,000-300,000 faults a day each, a second
of system time on the reader's thread.

An array handed out is a view of one of a few buffers kept here, and a buffer is handed out again
only when no array refers to it any more: numpy makes every view (slices, `view`, `reshape`),
and polars and Arrow keep the array they were given when they share its memory, so a buffer
still in use anywhere holds references beyond this pool's own. That count, not a promise of the
caller's, decides: an array kept for longer (carried over to the next batch, held by a writer)
simply keeps its buffer out of turn, and a fresh one is made (kept when there is room, else left
to the allocator as before). Memory stays bounded: at most `buffers` buffers are kept, each as
large as the largest array asked of it.
"""

from __future__ import annotations

import math
import sys
import threading

import numpy as np


class ReusedArrays:
    """Uninitialized arrays like `np.empty`'s, from at most `buffers` kept buffers. Not shared
    between threads: each reader thread makes its own (arrays may be dropped on any thread)."""

    def __init__(self, buffers: int) -> None:
        self._kept: list[np.ndarray] = []
        self._room = buffers
        # The references a kept buffer has when nothing else refers to it, as `_references`
        # counts them (the list's and the call's): measured, not assumed by interpreter version.
        self._kept.append(np.empty(0, np.uint8))
        self._unused = self._references(0)
        self._kept.clear()

    def empty(self, shape: int | tuple[int, ...], dtype: np.dtype | type) -> np.ndarray:
        """A C-contiguous array of `shape` and `dtype`, its values undefined."""
        dtype = np.dtype(dtype)
        shape = (shape,) if isinstance(shape, int) else tuple(shape)
        size = math.prod(shape) * dtype.itemsize
        free = [i for i in range(len(self._kept)) if self._references(i) == self._unused]
        fits = next((i for i in free if self._kept[i].nbytes >= size), None)
        if fits is not None:
            buffer = self._kept[fits]
        else:
            buffer = np.empty(max(size, 1), np.uint8)
            if free:  # each free one too small for this array: a larger one takes a place
                self._kept[free[0]] = buffer
            elif len(self._kept) < self._room:
                self._kept.append(buffer)
        return buffer[:size].view(dtype).reshape(shape)

    def zeros(self, shape: int | tuple[int, ...], dtype: np.dtype | type) -> np.ndarray:
        """`empty`, filled with zeros."""
        array = self.empty(shape, dtype)
        array.fill(0)
        return array

    def _references(self, index: int) -> int:
        return sys.getrefcount(self._kept[index])


class PerThreadArrays:
    """A `ReusedArrays` of `buffers` for each thread that asks (`mine`), for work spread over a
    thread pool; each goes with its thread, or with this object."""

    def __init__(self, buffers: int) -> None:
        self._buffers = buffers
        self._local = threading.local()

    def mine(self) -> ReusedArrays:
        arrays = getattr(self._local, "arrays", None)
        if arrays is None:
            arrays = self._local.arrays = ReusedArrays(self._buffers)
        return arrays

"""The CLI process's garbage collector: the heap that imports and definitions build (about 200 k
objects, 380 k after a bench day's run) is long-lived, and CPython's full collections walk all of
it every time. Freezing it (`gc.freeze`, a documented part of the `gc` module) leaves the
collections the run's own young objects."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def startup_heap_frozen() -> Iterator[None]:
    """The objects alive now kept out of collections inside the block, then put back: the full
    collections of a bench day's run took 0.6-0.9 s with them and about 0.4 s without. Put back,
    not left frozen, so that a process running many commands (the tests) still collects them."""
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def spare_exit_collections() -> None:
    """At exit CPython tears the modules down with full collections over every object still alive:
    1.3 s of the 1.5 s a bench day's `run` took to exit. One collection now finalizes the garbage
    there is (a file or a connection caught in a reference cycle is closed as before); freezing the
    rest keeps the exit's collections from walking it again. The operating system frees the memory.
    Only for a process about to exit: whatever is frozen is never collected."""
    gc.collect()
    gc.freeze()

"""The CLI process's garbage collector: the heap that imports and definitions build (about 200 k
objects, 380 k after a bench day's run) is long-lived, and CPython's full collections walk all of
it every time. Freezing it (`gc.freeze`, a documented part of the `gc` module) leaves the
collections the run's own young objects."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def collections_paused() -> Iterator[None]:
    """No automatic collection inside the block (`startup_heap_frozen` resumes them for a run):
    while a command imports Dagster and its storage, loads the definitions and opens the instance,
    the heap only grows, and each full collection walks all of it to find little garbage: five
    of them took 0.41 s of a one-step run's 2.2-2.45 s (1.86-1.94 s without them, 3 MB more
    resident; its exit's collection found 8,335 objects of garbage in 289 k). Collection is put
    back as it was after the block."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


# Whether this process exits after its one command (`console`): see `startup_heap_frozen`.
_exits_after_command = False


def exits_after_command() -> None:
    """Declare that this process runs one command and exits (the installed script does)."""
    global _exits_after_command
    _exits_after_command = True


@contextmanager
def startup_heap_frozen() -> Iterator[None]:
    """The objects alive now kept out of collections inside the block, and collections on, then
    both put back: the full collections of a bench day's run took 0.6-0.9 s with them and about
    0.4 s without. Put back, not left frozen, so that a process running many commands (the tests)
    still collects them; left frozen in a process that exits after its command, whose exit's one
    collection (`spare_exit_collections`) then walks only what the run left: 0.03 s against 0.28 s
    after a bench day's run (the 7,700 objects of garbage the frozen heap held then, modules' and
    functions' leftovers, had no finalizer)."""
    enabled = gc.isenabled()
    gc.freeze()
    gc.enable()
    try:
        yield
    finally:
        if not _exits_after_command:
            gc.unfreeze()
        if not enabled:
            gc.disable()


def spare_exit_collections() -> None:
    """At exit CPython tears the modules down with full collections over every object still alive:
    1.3 s of the 1.5 s a bench day's `run` took to exit. One collection now finalizes the garbage
    there is (a file or a connection caught in a reference cycle is closed as before); freezing the
    rest keeps the exit's collections from walking it again. The operating system frees the memory.
    Only for a process about to exit: whatever is frozen is never collected."""
    gc.collect()
    gc.freeze()

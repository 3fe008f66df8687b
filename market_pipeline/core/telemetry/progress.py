"""Progress of the long loops of a step (rows done out of rows), for whoever watches: the CLI.

A stage opens a task per unit of work (`with progress.task("raw_book_deltas 2024-01-01 BINANCE:BTC-USDT"):`)
and the core loop inside reports its rows (`progress.expect(rows)` once it knows the total,
`progress.advance(n)` per batch). Nothing is published unless someone watches (`watching(sink)`,
the core context's `progress_sink`): under the Dagster daemon or the UI no one does, and a call
costs a context-variable lookup per batch. The CLI watches with a sink that renders
(cli/progress.py). A step's worker processes (defs/common/parallel.py) publish into a queue
that the parent drains into its own sink (`queue_sink`, `drain`).

Updates of one task are throttled to one every `MIN_INTERVAL_SECONDS`, plus its start and its end.

While someone watches, numba compiling a kernel is a transient task of its own ("compiling kernel
..."): on the first run after an install or an upgrade each kernel compiles once (up to ~10 s,
before its stage's rows move), and a watcher that shows what runs should say so rather than show
a task stuck at 0%. Transient tasks get no start and end lines: most compiles take well under a
second.
"""

from __future__ import annotations

import contextvars
import itertools
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from market_pipeline.core import context

MIN_INTERVAL_SECONDS = 0.5
# The label of a kernel numba compiles (its disk cache missed), followed by the kernel's name: a
# run that says it spent that time compiling, which a benchmark must not count (bench/graph.py).
COMPILING_KERNEL = "compiling kernel"


@dataclass(frozen=True)
class Update:
    """The state of one task: `done` of `total` rows (None while unknown) after `elapsed` seconds."""

    task: str  # unique across processes: "<pid>:<n>"
    label: str
    done: int
    total: int | None
    elapsed: float
    finished: bool = False
    transient: bool = False  # shown while it runs (live display, "working:" lines), no start or end lines


Sink = Callable[[Update], None]

_ids = itertools.count(1)
_current: contextvars.ContextVar[_Task | None] = contextvars.ContextVar("progress_task", default=None)


@contextmanager
def watching(sink: Sink) -> Iterator[None]:
    """Publish the updates of the work inside to `sink`."""
    _publish_compiles()
    with context.using_changes(progress_sink=sink):
        yield


def _sink() -> Sink | None:
    return context.current().progress_sink


_compiles_published = False


def _publish_compiles() -> None:
    """Publish each kernel numba compiles (its disk cache missed) as a task, once per process."""
    global _compiles_published
    if _compiles_published:
        return
    from numba.core import event

    class CompileListener(event.Listener):
        """Only the outermost compile of a thread is a task: the jitted functions a kernel calls
        compile inside it."""

        def __init__(self) -> None:
            self._local = threading.local()

        def on_start(self, ev: event.Event) -> None:
            depth = getattr(self._local, "depth", 0)
            self._local.depth = depth + 1
            if depth == 0:
                label = f"{COMPILING_KERNEL} {_kernel_name(ev)} (once after an install or upgrade)"
                self._local.task = _Task(label, transient=True)
                self._local.task.publish(force=True)

        def on_end(self, ev: event.Event) -> None:
            self._local.depth -= 1
            if self._local.depth == 0:
                self._local.task.publish(finished=True)

    event.register("numba:compile", CompileListener())
    _compiles_published = True


def _kernel_name(ev: object) -> str:
    """ "module.function" of the kernel a compile event is for. A listener that raised would fail
    the compile itself, so anything unexpected in the event is a generic name."""
    data = getattr(ev, "data", None)
    function = getattr(data.get("dispatcher") if isinstance(data, dict) else None, "py_func", None)
    module, name = getattr(function, "__module__", None), getattr(function, "__qualname__", None)
    if not (isinstance(module, str) and isinstance(name, str)):
        return "(a numba function)"
    return f"{module.rsplit('.', 1)[-1]}.{name}"


def watched() -> bool:
    return _sink() is not None


class _Task:
    def __init__(self, label: str, transient: bool = False) -> None:
        self.id = f"{os.getpid()}:{next(_ids)}"
        self.label = label
        self.transient = transient
        self.done = 0
        self.total: int | None = None
        self.started = time.monotonic()
        self._published = 0.0

    def publish(self, finished: bool = False, force: bool = False) -> None:
        sink = _sink()
        if sink is None:
            return
        now = time.monotonic()
        if not (finished or force) and now - self._published < MIN_INTERVAL_SECONDS:
            return
        self._published = now
        sink(Update(self.id, self.label, self.done, self.total, now - self.started, finished, self.transient))


@contextmanager
def task(label: str) -> Iterator[None]:
    """A unit of work the loops inside it report on; nested tasks report to the innermost."""
    current = _Task(label)
    token = _current.set(current)
    current.publish(force=True)
    try:
        yield
    finally:
        _current.reset(token)
        current.publish(finished=True)


def expect(rows: int) -> None:
    """The current task has `rows` more rows to go through (called again for a second file)."""
    current = _current.get()
    if current is not None:
        current.total = (current.total or 0) + int(rows)
        current.publish(force=True)


def advance(rows: int) -> None:
    """`rows` more rows of the current task are done."""
    current = _current.get()
    if current is not None:
        current.done += int(rows)
        current.publish()


def queue_sink(updates: queue.Queue | object) -> Sink:
    """A sink for a worker process: its updates go into `updates` (a multiprocessing queue)."""
    return updates.put_nowait  # type: ignore[attr-defined]


@contextmanager
def drain(updates: queue.Queue | object) -> Iterator[None]:
    """While inside, a thread hands what workers put into `updates` to this process's sink."""
    stop = threading.Event()
    sink = _sink()

    def forward() -> None:
        while True:
            try:
                update = updates.get(timeout=0.2)  # type: ignore[attr-defined]
            except queue.Empty:
                if stop.is_set():  # only once the last updates are through
                    return
                continue
            except (EOFError, OSError):  # the queue's pipe closed with the pool
                return
            if sink is not None:
                sink(update)

    thread = threading.Thread(target=forward, name="progress-drain", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=2)

"""What `run` and `demo` show while the run executes: the running steps, and per instrument-day
the rows done out of rows and the time taken, so the command is never silent for long.

Two sources feed it: the run's step events in the Dagster event log (polled by a thread) and the
stages' own row counts (`core/telemetry/progress.py`, whose sink this sets). On a terminal it is a
live `rich` display on stderr; otherwise (a log file, CI) plain lines on stderr: a line when a
step or an instrument-day starts and ends, the rows of each running instrument-day every
`PLAIN_EVERY_SECONDS`, and a "working:" line whenever nothing was printed for
`HEARTBEAT_SECONDS`, which also names a kernel numba is compiling (a transient task: no lines of
its own).
"""

from __future__ import annotations

import sys
import threading
import time
from contextlib import ExitStack
from typing import TYPE_CHECKING, TextIO

from market_pipeline.cli.common import fmt_int
from market_pipeline.core.telemetry import progress

if TYPE_CHECKING:
    import dagster as dg

POLL_SECONDS = 1.0
PLAIN_EVERY_SECONDS = 10.0
HEARTBEAT_SECONDS = 5.0


def _rows(update: progress.Update) -> str:
    if update.total:
        share = min(update.done / update.total, 1.0)
        return f"{fmt_int(update.done)}/{fmt_int(update.total)} rows ({share:.0%})"
    return f"{fmt_int(update.done)} rows" if update.done else "started"


class RunProgress:
    """Shows a run's progress while inside; `interactive` None: a live display only on a terminal."""

    def __init__(self, run_id: str, stream: TextIO | None = None, interactive: bool | None = None) -> None:
        self.run_id = run_id
        self.stream = stream or sys.stderr
        self.interactive = self.stream.isatty() if interactive is None else interactive
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._started = time.monotonic()
        self._last_output = self._started
        self._steps: dict[str, float] = {}  # running step -> when it started (monotonic)
        self._reported: set[str] = set()  # steps whose end was said
        self._tasks: dict[str, progress.Update] = {}  # running instrument-day tasks, latest update
        self._printed: dict[str, float] = {}  # task -> when its last plain line was printed
        self._live = None  # rich Progress on a terminal
        self._live_ids: dict[str, int] = {}
        self._thread = threading.Thread(target=self._watch, name="run-progress", daemon=True)
        self._watching = ExitStack()  # the sink bound while the run this object watches runs (this thread)

    def __enter__(self) -> RunProgress:
        if self.interactive:
            from rich.console import Console
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

            self._live = Progress(
                TextColumn("{task.description}"),
                BarColumn(bar_width=20),
                TextColumn("{task.fields[rows]}"),
                TimeElapsedColumn(),
                console=Console(file=self.stream),
                transient=True,
            )
            self._live.start()
        self._watching.enter_context(progress.watching(self.update))
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._watching.close()
        if self._live is not None:
            self._live.stop()

    # -- output ---------------------------------------------------------------------------------

    def _say(self, text: str) -> None:
        """A permanent line (caller holds the lock)."""
        stamp = f"[{time.monotonic() - self._started:5.0f} s] "
        if self._live is not None:
            self._live.console.print(stamp + text, highlight=False, markup=False)
        else:
            print(stamp + text, file=self.stream, flush=True)
        self._last_output = time.monotonic()

    def update(self, update: progress.Update) -> None:
        """The sink for the stages' row counts (called from the step's thread or a drain thread)."""
        with self._lock:
            known = update.task in self._tasks
            if update.finished:
                self._tasks.pop(update.task, None)
                self._printed.pop(update.task, None)
                if self._live is not None and update.task in self._live_ids:
                    self._live.remove_task(self._live_ids.pop(update.task))
                if not update.transient:
                    rows = f"{fmt_int(update.done)} rows in " if update.done else ""
                    self._say(f"done {update.label}: {rows}{update.elapsed:.1f} s")
                return
            self._tasks[update.task] = update
            if self._live is not None:
                if update.task not in self._live_ids:
                    self._live_ids[update.task] = self._live.add_task(update.label, total=update.total, rows="")
                rows = _rows(update) if update.total or update.done else ""
                self._live.update(self._live_ids[update.task], completed=update.done, total=update.total, rows=rows)
                return
            now = time.monotonic()
            if update.transient:  # only in the "working:" lines while it lasts
                return
            if not known:
                self._printed[update.task] = now
                self._say(f"{update.label}: started")
            elif now - self._printed.get(update.task, 0.0) >= PLAIN_EVERY_SECONDS:
                self._printed[update.task] = now
                self._say(f"{update.label}: {_rows(update)}, {update.elapsed:.0f} s")

    # -- the run's steps, from the event log ----------------------------------------------------------

    def _watch(self) -> None:
        import dagster as dg

        try:
            with dg.DagsterInstance.get() as instance:
                while not self._stop.wait(POLL_SECONDS):
                    self._look(instance)
        except Exception as exc:  # progress is a courtesy: never take the run down with it
            with self._lock:
                self._say(f"warning: no step progress: {type(exc).__name__}: {exc}")

    def _look(self, instance: dg.DagsterInstance) -> None:
        import dagster as dg

        try:
            records = instance.all_logs(
                self.run_id,
                of_type={
                    dg.DagsterEventType.STEP_START,
                    dg.DagsterEventType.STEP_SUCCESS,
                    dg.DagsterEventType.STEP_FAILURE,
                },
            )
        except Exception:  # e.g. the instance's database briefly locked: look again next time
            records = []
        now = time.monotonic()
        with self._lock:
            started: dict[str, float] = {}  # step -> its start event's timestamp
            ended: dict[str, tuple[str, float]] = {}  # step -> (how it ended, when)
            for record in records:
                event = record.dagster_event
                if event is None or event.step_key is None:
                    continue
                if event.event_type == dg.DagsterEventType.STEP_START:
                    started[event.step_key] = record.timestamp
                else:
                    ended[event.step_key] = ("failed" if event.is_step_failure else "done", record.timestamp)
            # New: neither running nor ended at the last look. A step that began and ended between
            # two looks is said to have started all the same.
            for step in sorted(started.keys() - self._steps.keys() - self._reported):
                self._say(f"step {step}: started")
                if step not in ended:
                    self._steps[step] = now
                    if self._live is not None:
                        self._live_ids["step:" + step] = self._live.add_task(f"step {step}", total=None, rows="")
            for step in sorted(ended.keys() - self._reported):
                self._reported.add(step)
                self._steps.pop(step, None)
                outcome, at = ended[step]
                self._say(f"step {step}: {outcome} after {at - started.get(step, at):.0f} s")  # the events' times
                if self._live is not None and "step:" + step in self._live_ids:
                    self._live.remove_task(self._live_ids.pop("step:" + step))
            if self._live is None and now - self._last_output >= HEARTBEAT_SECONDS:
                self._say("working: " + self._doing(now))

    def _doing(self, now: float) -> str:
        parts = [f"{u.label} {_rows(u)}" for u in self._tasks.values()]
        parts += [f"step {s} ({now - t:.0f} s)" for s, t in self._steps.items()]
        return "; ".join(parts) or "starting the run"

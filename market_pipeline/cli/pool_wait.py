"""While a run executes, a watch over the concurrency pools: it says what a step waits for,
recovers a dead holder of the slot, and gives up after `cli.run_wait_timeout_seconds`."""

from __future__ import annotations

import ctypes
import threading
import time
from typing import TYPE_CHECKING

from market_pipeline.cli.common import eprint
from market_pipeline.cli.dead_runs import describe_holder, free_slots_of_dead_holders

if TYPE_CHECKING:
    import dagster as dg

WAIT_POLL_SECONDS = 1.0  # how often a running command looks at the pools
WAIT_FIRST_NOTICE_SECONDS = 3.0  # a wait shorter than this is not worth a line
WAIT_NOTICE_EVERY_SECONDS = 30.0


class GaveUpWaiting(KeyboardInterrupt):
    """Raised in the thread executing the run when the watch gives up; Dagster fails the run."""


def _raise_in_thread(thread_id: int, exc_type: type[BaseException]) -> None:
    """Raise `exc_type` in another thread of this process at its next Python instruction.

    Dagster defers SIGINT while a step waits for a pool slot (it only raises interrupts inside a
    step's own code), so neither Ctrl-C nor `_thread.interrupt_main` can stop that wait; an
    asynchronous exception does, once the executor's sleep between claims (at most 15 s) returns.
    """
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id), ctypes.py_object(exc_type))


class PoolWaitWatch(threading.Thread):
    """Watches the pools while the run executes in the main thread: says what a step waits for,
    recovers a dead holder of the slot, and after `timeout` seconds of waiting interrupts the run."""

    def __init__(self, run_id: str, timeout: float, poll: float = WAIT_POLL_SECONDS) -> None:
        super().__init__(name="pool-wait-watch", daemon=True)
        self.run_id = run_id
        self.timeout = timeout
        self.poll = poll
        self.gave_up: str | None = None
        self._stop_event = threading.Event()
        self._executing_thread = threading.get_ident()  # created by the thread that executes the run
        self._since: float | None = None  # when this run's step started to wait (monotonic)
        self._noticed = 0.0  # when the last "waiting" line was printed

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=10)

    def _waits(self, instance: dg.DagsterInstance) -> list[tuple[str, str, list[tuple[str, str]]]]:
        """(pool, waiting step of this run, [(holder run, holder step)]) for each step of this run
        that waits for a slot."""
        storage = instance.event_log_storage
        waits = []
        for pool in sorted(storage.get_concurrency_keys()):
            info = storage.get_concurrency_info(pool)
            mine = [p.step_key for p in info.pending_steps if p.run_id == self.run_id and p.assigned_timestamp is None]
            if mine:
                holders = [(s.run_id, s.step_key) for s in info.claimed_slots if s.run_id != self.run_id]
                waits += [(pool, step, holders) for step in mine]
        return waits

    def run(self) -> None:
        import dagster as dg

        try:
            with dg.DagsterInstance.get() as instance:  # this thread's own connections
                self._watch(instance)
        except Exception as exc:  # the watch is a courtesy: never take the run down with it
            eprint(f"warning: cannot watch the concurrency pools: {type(exc).__name__}: {exc}")

    def _watch(self, instance: dg.DagsterInstance) -> None:
        warned = False
        while not self._stop_event.wait(self.poll):
            try:
                if self._look(instance):
                    return
            except Exception as exc:  # e.g. the instance's database briefly locked: look again
                if not warned:
                    eprint(f"warning: cannot read the concurrency pools: {type(exc).__name__}: {exc}")
                    warned = True

    def _look(self, instance: dg.DagsterInstance) -> bool:
        """One look at the pools; True once the watch gave up."""
        waits = self._waits(instance)
        if not waits:
            self._since = None
            return False
        for line in free_slots_of_dead_holders(instance, {run_id for _, _, holders in waits for run_id, _ in holders}):
            eprint(line)
        now = time.monotonic()
        self._since = self._since if self._since is not None else now
        waited = now - self._since
        pool, step, holders = waits[0]
        held_by = "; ".join(describe_holder(instance, r, s) for r, s in holders) or "no run (the slot is free)"
        what = f"step {step} waits for a slot of pool {pool!r}, held by {held_by}"
        if waited >= self.timeout:
            self.gave_up = (
                f"gave up after {waited:.0f} s: {what}. If that run is dead, fail it in the UI (Runs -> "
                "Terminate) and free its slots (Deployment -> Concurrency); otherwise run again later or "
                "raise PIPELINE_CLI__RUN_WAIT_TIMEOUT_SECONDS"
            )
            run = instance.get_run_by_id(self.run_id)
            if run is not None:  # say why in the run's event log, for the UI
                instance.report_engine_event(f"market-pipeline {self.gave_up}", dagster_run=run)
            eprint(f"waiting: giving up after {waited:.0f} s; stopping the run")
            if not self._stop_event.is_set():
                _raise_in_thread(self._executing_thread, GaveUpWaiting)
            return True
        if waited >= WAIT_FIRST_NOTICE_SECONDS and (
            self._noticed == 0.0 or now - self._noticed >= WAIT_NOTICE_EVERY_SECONDS
        ):
            self._noticed = now
            eprint(f"waiting {waited:.0f} s (giving up after {self.timeout:.0f} s): {what}")
        return False

"""Progress while a run executes: the stages' row counts (core/telemetry/progress.py), their way out
of worker processes (defs/common/parallel.py), and the plain lines the CLI prints (cli/progress.py).
The whole path through a real `demo` is asserted in test_alerts.py (test_demo_injected_fault...)."""

from __future__ import annotations

import io
import re

import pytest

from market_pipeline.core.telemetry import progress


@pytest.fixture
def updates():
    seen: list[progress.Update] = []
    with progress.watching(seen.append):
        yield seen


def test_a_task_reports_its_rows_and_its_end(updates):
    with progress.task("raw_book_deltas 2024-01-01 BINANCE:BTC-USDT"):
        progress.expect(1000)
        for _ in range(10):
            progress.advance(100)
    first, *_, last = updates
    assert (first.done, first.total, first.finished) == (0, None, False)
    assert (last.done, last.total, last.finished) == (1000, 1000, True)
    assert {u.label for u in updates} == {"raw_book_deltas 2024-01-01 BINANCE:BTC-USDT"}
    # Throttled: the ten batches within half a second publish at most the start, the total and the end.
    assert len(updates) <= 4


def test_nothing_is_published_without_a_sink_or_outside_a_task():
    assert not progress.watched()
    with progress.task("unwatched"):
        progress.expect(5)
        progress.advance(5)  # no sink: nothing to call, nothing raised
    seen: list[progress.Update] = []
    with progress.watching(seen.append):
        progress.advance(3)  # no task open
    assert seen == []


def _counting_task(source, settings, label: str, rows: int) -> int:
    with progress.task(label):
        progress.expect(rows)
        progress.advance(rows)
    return rows


def test_a_kernel_compiling_is_a_task_of_its_own(updates):
    """On the first run after an install numba compiles each kernel before its stage's rows move:
    the watcher says so, once per kernel (not for the jitted functions it calls), and not for a
    kernel already compiled."""
    import numba

    @numba.njit(cache=False)
    def _inner(x):
        return x + 1

    @numba.njit(cache=False)
    def _outer(x):
        return _inner(x) * 2

    with progress.task("reconstructed_books 2024-01-01 BINANCE:BTC-USDT"):
        assert _outer(20) == 42
        assert _outer(1) == 4  # compiled already: nothing more
    compiles = [u for u in updates if u.label.startswith("compiling kernel")]
    assert all(u.transient for u in compiles)
    assert [(u.label, u.finished) for u in compiles] == [
        (
            "compiling kernel test_progress.test_a_kernel_compiling_is_a_task_of_its_own.<locals>._outer"
            " (once after an install or upgrade)",
            False,
        ),
        (
            "compiling kernel test_progress.test_a_kernel_compiling_is_a_task_of_its_own.<locals>._outer"
            " (once after an install or upgrade)",
            True,
        ),
    ]
    assert compiles[0].task == compiles[1].task
    # An event without the dispatcher numba gives today still names something, never raises
    # (a listener that raised would fail the compile).
    from numba.core import event

    assert progress._kernel_name(event.Event("numba:compile", event.EventStatus.START, data={})) == (
        "(a numba function)"
    )
    # The stage's own task is untouched: its start and its end.
    stage = [u for u in updates if u.label.startswith("reconstructed_books")]
    assert [u.finished for u in stage] == [False, True]


def test_worker_processes_report_to_the_parent(updates, monkeypatch):
    from market_pipeline.defs.common.parallel import run_tasks
    from market_pipeline.settings import load_settings

    monkeypatch.setenv("PIPELINE_WORKERS", "2")
    tasks = [("day one", 10), ("day two", 20)]
    outcomes = run_tasks(load_settings(), _counting_task, tasks)
    assert [o.value for o in outcomes] == [10, 20]
    ends = {u.label: u.done for u in updates if u.finished}
    assert ends == {"day one": 10, "day two": 20}
    assert len({u.task.split(":")[0] for u in updates}) >= 1  # ids carry the worker's pid


def test_plain_lines_say_start_progress_and_end():
    from market_pipeline.cli import progress as cli_progress

    out = io.StringIO()
    shown = cli_progress.RunProgress("run-id", stream=out, interactive=False)
    task = "123:1"
    shown.update(progress.Update(task, "reconstructed_books 2024-01-01 X:Y", 0, None, 0.0))
    shown.update(progress.Update(task, "reconstructed_books 2024-01-01 X:Y", 10, 40, 0.1))  # too soon for a line
    shown._printed[task] = -1e9  # as if the last line were long ago
    shown.update(progress.Update(task, "reconstructed_books 2024-01-01 X:Y", 20, 40, 12.0))
    shown.update(progress.Update(task, "reconstructed_books 2024-01-01 X:Y", 40, 40, 15.2, finished=True))
    lines = out.getvalue().splitlines()
    assert [re.sub(r"^\[\s*\d+ s\] ", "", line) for line in lines] == [
        "reconstructed_books 2024-01-01 X:Y: started",
        "reconstructed_books 2024-01-01 X:Y: 20/40 rows (50%), 12 s",
        "done reconstructed_books 2024-01-01 X:Y: 40 rows in 15.2 s",
    ]
    assert shown._doing(0.0) == "starting the run"  # nothing running any more


def test_a_compiling_kernel_shows_only_in_the_working_lines():
    """A transient task (numba compiling a kernel) prints no lines of its own; while it lasts the
    "working:" line names it beside the stage it holds up."""
    from market_pipeline.cli import progress as cli_progress

    out = io.StringIO()
    shown = cli_progress.RunProgress("run-id", stream=out, interactive=False)
    shown.update(progress.Update("1:1", "reconstructed_books 2024-01-01 X:Y", 0, 40, 0.0))
    compiling = "compiling kernel delta_replay.replay_lake_batch (once after an install or upgrade)"
    shown.update(progress.Update("1:2", compiling, 0, None, 0.0, transient=True))
    assert shown._doing(0.0) == f"reconstructed_books 2024-01-01 X:Y 0/40 rows (0%); {compiling} started"
    shown.update(progress.Update("1:2", compiling, 0, None, 11.3, finished=True, transient=True))
    assert shown._doing(0.0) == "reconstructed_books 2024-01-01 X:Y 0/40 rows (0%)"
    lines = [re.sub(r"^\[\s*\d+ s\] ", "", line) for line in out.getvalue().splitlines()]
    assert lines == ["reconstructed_books 2024-01-01 X:Y: started"]


def test_every_step_is_said_to_start_and_end_with_the_events_own_times():
    """The step lines come from the run's event log, looked at once a second: a step that began and
    ended between two looks is said to have started too, and a step's time is its events' (not
    the looks')."""
    from types import SimpleNamespace

    import dagster as dg

    from market_pipeline.cli import progress as cli_progress

    def record(step: str, kind: dg.DagsterEventType, at: float) -> SimpleNamespace:
        event = SimpleNamespace(
            step_key=step, event_type=kind, is_step_failure=kind == dg.DagsterEventType.STEP_FAILURE
        )
        return SimpleNamespace(dagster_event=event, timestamp=at)

    log: list[SimpleNamespace] = []
    instance = SimpleNamespace(all_logs=lambda run_id, of_type: list(log))
    out = io.StringIO()
    shown = cli_progress.RunProgress("run-id", stream=out, interactive=False)
    log += [record("raw_trades", dg.DagsterEventType.STEP_START, 100.0)]
    shown._look(instance)
    log += [
        record("raw_trades", dg.DagsterEventType.STEP_SUCCESS, 103.2),
        record("raw_book_deltas", dg.DagsterEventType.STEP_START, 103.3),  # begins and ends between looks
        record("raw_book_deltas", dg.DagsterEventType.STEP_FAILURE, 110.9),
    ]
    shown._look(instance)
    shown._look(instance)  # nothing new: nothing said again
    lines = [re.sub(r"^\[\s*\d+ s\] ", "", line) for line in out.getvalue().splitlines()]
    assert lines == [
        "step raw_trades: started",
        "step raw_book_deltas: started",
        "step raw_book_deltas: failed after 8 s",
        "step raw_trades: done after 3 s",
    ]
    assert shown._doing(0.0) == "starting the run"  # no step left running

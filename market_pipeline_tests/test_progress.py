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
    previous = progress.set_sink(seen.append)
    yield seen
    progress.set_sink(previous)


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
    assert progress.set_sink(None) is None
    with progress.task("unwatched"):
        progress.expect(5)
        progress.advance(5)  # no sink: nothing to call, nothing raised
    seen: list[progress.Update] = []
    progress.set_sink(seen.append)
    try:
        progress.advance(3)  # no task open
    finally:
        progress.set_sink(None)
    assert seen == []


def _counting_task(source, settings, label: str, rows: int) -> int:
    with progress.task(label):
        progress.expect(rows)
        progress.advance(rows)
    return rows


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

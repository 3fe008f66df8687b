"""The suite's budget plugin (support/budget.py) on a tiny inner suite that leaves behind what
generate_day and Dagster's SQLite run storage would: manifest.json files and a runs.db."""

from __future__ import annotations

import shutil
import textwrap

import pytest

from market_pipeline_tests.support.budget import SHARED
from market_pipeline_tests.support.project import REPO_ROOT

PLUGIN = ("-p", "market_pipeline_tests.support.budget", "--budget-file", "budget.toml")

CONFTEST = '''
import json, os, sqlite3, zlib
import pytest

def generate(root, symbol, day, mtime_ns=None):
    """What generate_day leaves behind: the day's manifest.json, written atomically."""
    path = root / "_ground_truth/synthetic/exchange=BINANCE" / f"symbol={symbol}" / f"dt={day}" / "manifest.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.with_name(".tmp").write_text(json.dumps({"symbol": symbol, "day": day}))
    os.replace(path.with_name(".tmp"), path)
    if mtime_ns:
        os.utime(path, ns=(mtime_ns, mtime_ns))

def record_runs(home, runs):
    """Dagster's SQLite run storage with (run_id, asset selection or None, plan steps, started) runs."""
    (home / "history").mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(home / "history" / "runs.db") as db:
        db.execute("CREATE TABLE IF NOT EXISTS runs (run_id TEXT, run_body TEXT, start_time FLOAT)")
        db.execute("CREATE TABLE IF NOT EXISTS snapshots (snapshot_id TEXT, snapshot_body BLOB)")
        for run_id, selection, steps, started in runs:
            keys = None if selection is None else {"__frozenset__": [{"path": [key]} for key in selection]}
            body = {"asset_selection": keys, "execution_plan_snapshot_id": "plan-" + run_id}
            db.execute("INSERT INTO runs VALUES (?, ?, ?)", (run_id, json.dumps(body), 1.0 if started else None))
            plan = zlib.compress(json.dumps({"steps": [{"key": step} for step in steps]}).encode())
            db.execute("INSERT INTO snapshots VALUES (?, ?)", ("plan-" + run_id, plan))

@pytest.fixture(scope="session")
def session_lake(tmp_path_factory):
    root = tmp_path_factory.mktemp("session_lake")
    generate(root, "BTC-USDT", "2024-01-01")
    return root
'''

TEST_A = """
import shutil
import pytest
from conftest import generate, record_runs

WHOLE = ["raw_trades", "reconstructed_books", "pipeline_metrics"]

@pytest.fixture(scope="module")
def module_lake(tmp_path_factory):
    root = tmp_path_factory.mktemp("module_lake")
    generate(root, "SOL-USDT", "2024-03-01")
    return root

def test_two_days(tmp_path):
    generate(tmp_path, "BTC-USDT", "2024-03-01")
    generate(tmp_path, "ETH-USDT", "2024-03-01")

def test_first_user_of_a_fixture(module_lake, session_lake):
    pass

def test_a_copy_is_no_generation(module_lake, tmp_path):
    shutil.copytree(module_lake, tmp_path / "copy")

def test_a_regeneration_is_one(tmp_path):
    generate(tmp_path / "one", "BTC-USDT", "2024-03-02", mtime_ns=1_000_000_000)
    generate(tmp_path / "two", "BTC-USDT", "2024-03-02", mtime_ns=2_000_000_000)

def test_writes_into_the_module_fixture(module_lake):
    generate(module_lake, "BTC-USDT", "2024-03-05")

def test_runs(tmp_path):
    home = tmp_path / "dagster_home"
    record_runs(home, [
        ("whole", WHOLE, WHOLE, True),
        ("raw-only", ["raw_trades"], ["raw_trades"], True),
        ("queued", WHOLE, WHOLE, False),
        ("a-job", None, WHOLE, True),
    ])
    shutil.copytree(home, tmp_path / "copied_home")  # the same runs
"""

TEST_B = """
from conftest import generate

def test_nothing():
    pass

def test_writes_into_the_session_fixture(session_lake):
    generate(session_lake, "BTC-USDT", "2024-01-02")
"""
# Under xdist another worker may run test_b.py and build the session fixture again: none here, but
# a day made where the workers' temp dirs meet (as support/research_lake.py builds its lake once).
TEST_B_XDIST = """
import shutil
from conftest import generate

def test_nothing():
    pass

def test_one_day(tmp_path):
    generate(tmp_path, "BTC-USDT", "2024-01-02")

def test_a_day_in_the_workers_shared_dir(tmp_path_factory):
    generate(tmp_path_factory.getbasetemp().parent / "shared_lake", "BTC-USDT", "2024-01-03")

def test_a_copy_of_the_shared_dir(tmp_path_factory, tmp_path):  # counted once, where it was made
    shutil.copytree(tmp_path_factory.getbasetemp().parent / "shared_lake", tmp_path / "copy")
"""

# (days, whole-graph runs, test) of the inner suite, the biggest first.
EXPECTED = [
    (2, 0, "test_a.py::test_a_regeneration_is_one"),
    (2, 0, "test_a.py::test_first_user_of_a_fixture"),
    (2, 0, "test_a.py::test_two_days"),
    (1, 0, "test_a.py::test_writes_into_the_module_fixture"),
    (1, 0, "test_b.py::test_writes_into_the_session_fixture"),  # seen after test_b.py's last test
    (0, 2, "test_a.py::test_runs"),
]
EXPECTED_XDIST = [
    *EXPECTED[:3],
    (1, 0, SHARED),
    EXPECTED[3],
    (1, 0, "test_b.py::test_one_day"),
    EXPECTED[5],
]


def _line(days: int, runs: int, test: str) -> str:
    return f"  {days:4d} instrument-days {runs:3d} whole-graph runs  {test}"


@pytest.fixture
def inner(pytester: pytest.Pytester):
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_a=TEST_A, test_b=TEST_B)
    yield pytester
    # The inner suite's manifests and runs.db are fakes: gone before this suite's own budget looks.
    shutil.rmtree(pytester.path.parent / "basetemp", ignore_errors=True)
    for path in pytester.path.glob("runpytest-*"):
        shutil.rmtree(path, ignore_errors=True)


def _budget(pytester: pytest.Pytester, days: int, runs: int) -> None:
    pytester.path.joinpath("budget.toml").write_text(
        textwrap.dedent(f"""\
            generated_instrument_days = {days}
            whole_graph_runs = {runs}
        """)
    )


def test_counts_per_test_and_in_total_within_budget(inner):
    _budget(inner, 9, 2)
    result = inner.runpytest(*PLUGIN, "--budget-report")
    assert result.ret == pytest.ExitCode.OK
    result.assert_outcomes(passed=8)
    result.stdout.fnmatch_lines(
        [
            "per test, the biggest first:",
            *[_line(*row) for row in EXPECTED],
            "budget: 8/9 generated instrument-days, 2/2 whole-graph runs (budget.toml)",
        ],
        consecutive=True,
    )
    assert "budget exceeded" not in result.stdout.str()


def test_going_over_the_budget_fails_the_run_with_what_every_test_made(inner):
    _budget(inner, 7, 1)
    result = inner.runpytest(*PLUGIN)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.assert_outcomes(passed=8)  # every test passed: the budget failed the run
    result.stdout.fnmatch_lines(
        [
            "*= budget exceeded =*",
            "8 generated instrument-days, over the budget: generated_instrument_days = 7 in budget.toml",
            "2 whole-graph runs, over the budget: whole_graph_runs = 1 in budget.toml",
            "per test, the biggest first:",
            *[_line(*row) for row in EXPECTED],
            "budget: 8/7 generated instrument-days, 2/1 whole-graph runs (budget.toml)",
        ],
        consecutive=True,
    )


@pytest.mark.parametrize("args", [[], ["."]], ids=["testpaths", "the testpaths given"])
def test_the_suite_of_the_testpaths_is_held_to_the_budget(inner, args):
    inner.makeini("[pytest]\ntestpaths = .\n")
    _budget(inner, 0, 0)
    result = inner.runpytest(*PLUGIN, *args)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["budget: 8/0 generated instrument-days, 2/0 whole-graph runs (budget.toml)"])


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (["-k", "two_days"], "-k"),
        (["test_a.py"], "paths narrower than testpaths"),
        (["test_a.py::test_runs"], "test ids given"),
    ],
)
def test_a_part_of_the_suite_prints_its_counts_but_is_not_held_to_the_budget(inner, args, reason):
    _budget(inner, 0, 0)
    result = inner.runpytest(*PLUGIN, *args)
    assert result.ret == pytest.ExitCode.OK
    counts = "budget: */0 generated instrument-days, */0 whole-graph runs"
    result.stdout.fnmatch_lines([f"{counts} (budget.toml; not enforced: {reason})"])
    assert "budget exceeded" not in result.stdout.str()


def test_under_xdist_the_controller_adds_up_what_the_workers_counted(inner, monkeypatch):
    pytest.importorskip("xdist")
    monkeypatch.setenv("PYTHONPATH", str(REPO_ROOT))
    inner.makepyfile(test_b=TEST_B_XDIST)
    _budget(inner, 8, 2)
    result = inner.runpytest_subprocess(*PLUGIN, "-n", "2", "--dist", "loadfile", "--budget-report")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.assert_outcomes(passed=10)
    result.stdout.fnmatch_lines(
        [
            "*= budget exceeded =*",
            "9 generated instrument-days, over the budget: generated_instrument_days = 8 in budget.toml",
            "per test, the biggest first:",
            *[_line(*row) for row in EXPECTED_XDIST],
            "budget: 9/8 generated instrument-days, 2/2 whole-graph runs (budget.toml)",
        ],
        consecutive=True,
    )

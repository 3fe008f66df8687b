"""Hooks and the autouse hermetic fixtures; everything the tests share is in `support`."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]

# The package may not be pip-installed (e.g. the editable install cannot build): make the
# source tree importable in this process either way. Subprocesses get it through PYTHONPATH.
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

# Asserts in the support modules (assert helpers among them) report their values as a test's do.
pytest.register_assert_rewrite("market_pipeline_tests.support")

# The shared fixtures, registered once for the whole suite (helpers are imported from the modules).
pytest_plugins = [
    "market_pipeline_tests.support.cli_env",
    "market_pipeline_tests.support.dagster_instance",
    "market_pipeline_tests.support.progress",
    "market_pipeline_tests.support.quality_world",
    "market_pipeline_tests.support.research_lake",
    "market_pipeline_tests.support.s3_server",
    "market_pipeline_tests.support.tardis_files",
    "market_pipeline_tests.support.vendor_lake",
    "pytester",  # core/test_suite_rules.py collects small suites of its own
]

# After the sys.path entry and the rewrite hook above.
from market_pipeline_tests.support import marker_rule  # noqa: E402
from market_pipeline_tests.support.cadence import TEST_CADENCE  # noqa: E402

# ---------------------------------------------------------------------------------------
# Collection: the markers of the expensive tests, and the order the files are handed out in
# ---------------------------------------------------------------------------------------


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects: the `slow` markers added here count
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Fail collection when a test runs a whole graph, dagster-daemon, the webserver or a browser
    without the marker that says so; give every such test `slow` too; then put the files with the
    most expensive tests first. `make test` runs pytest-xdist with `--dist loadfile
    --no-loadscope-reorder`: a worker takes whole files (module fixtures built once), in this
    order, so no long file starts last and leaves the other cores idle at the end. (Files sharing a
    session fixture are not kept on one worker: `--dist loadgroup` would, but pytest-xdist 3.8
    groups nothing under pytest 9; support/research_lake.py builds its lake once under a lock.)"""
    marker_rule.check(items)
    marker_rule.imply_slow(items)
    marker_rule.heaviest_files_first(items)


# ---------------------------------------------------------------------------------------
# Hermetic environment
# ---------------------------------------------------------------------------------------


def _hermetic_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    """No developer PIPELINE_* variables; one worker; the tests' cadence (support/cadence.py)."""
    for name in list(os.environ):
        if name.startswith("PIPELINE_"):
            monkeypatch.delenv(name, raising=False)
    # One process per step unless a test asks for workers: a pool per multi-instrument test
    # would cost seconds of start-up each (test_parallel.py covers the pool).
    monkeypatch.setenv("PIPELINE_WORKERS", "1")
    for name, value in TEST_CADENCE.items():
        monkeypatch.setenv(name, value)


@pytest.fixture(scope="session", autouse=True)
def _hermetic_session_env() -> Iterator[None]:
    """The hermetic variables for session and module fixtures too, which are set up before any
    function-scoped fixture of the test that first uses them."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        _hermetic_variables(monkeypatch)
        yield


@pytest.fixture(autouse=True)
def _hermetic_env(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The hermetic variables again (a test may change them) and an empty cwd (no stray `.env`)."""
    _hermetic_variables(monkeypatch)
    cwd = tmp_path_factory.mktemp("cwd")
    monkeypatch.chdir(cwd)
    return cwd

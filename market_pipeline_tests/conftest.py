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
    "market_pipeline_tests.support.tardis_files",
    "market_pipeline_tests.support.vendor_lake",
    "pytester",  # core/test_suite_rules.py collects small suites of its own
]

# After the sys.path entry and the rewrite hook above.
from market_pipeline_tests.support import marker_rule  # noqa: E402

# ---------------------------------------------------------------------------------------
# Scheduling on pytest-xdist workers (`make test`: -n auto --dist loadfile)
# ---------------------------------------------------------------------------------------

# A worker takes whole files, so module fixtures are built once; the files that share a session
# fixture go to one worker as one unit, so it is built once too. (xdist_group marks would say so,
# but --dist loadgroup of pytest-xdist 3.8 groups nothing under pytest 9.2: it renames the tests'
# node ids through an attribute pytest no longer reads.)
SHARED_FIXTURE_FILES = {
    "research_lake": ("test_read_api", "test_export_hftbacktest", "test_research_guide"),
}
# Units handed out first, the most expensive first: started last, one of them would leave the
# other core idle at the end of the suite. Then the other units with a test marked slow, then the
# rest, each in collection order.
HEAVIEST_FIRST = (
    "test_ui",
    "test_s3_lake",
    "research_lake",
    "test_source_agreement",
    "test_ui_graphql",  # not marked slow (it is in `make test-quick`), but it starts dagster-webserver
)
_UNIT_OF_FILE = {stem: fixture for fixture, stems in SHARED_FIXTURE_FILES.items() for stem in stems}


def _scheduling_unit(path: str) -> str:
    stem = Path(path).stem
    return _UNIT_OF_FILE.get(stem, stem)


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects: the `slow` markers added here count
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # A test that runs a whole graph, dagster-daemon, the webserver or a browser carries the marker
    # that says so (collection fails naming it otherwise), and every such marker implies slow.
    marker_rule.check(items)
    marker_rule.imply_slow(items)
    for item in items:
        for fixture in SHARED_FIXTURE_FILES.keys() & set(item.fixturenames):
            if item.path.stem not in SHARED_FIXTURE_FILES[fixture]:
                raise pytest.UsageError(
                    f"{item.path.name} uses the session fixture {fixture}: "
                    "add it to SHARED_FIXTURE_FILES in market_pipeline_tests/conftest.py"
                )
    rank = {unit: index for index, unit in enumerate(HEAVIEST_FIRST)}
    slow = len(HEAVIEST_FIRST)
    for item in items:
        if item.get_closest_marker("slow"):
            rank.setdefault(_scheduling_unit(str(item.path)), slow)
    items.sort(key=lambda item: rank.get(_scheduling_unit(str(item.path)), slow + 1))  # stable: files stay whole


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object | None:
    """--dist loadfile with the units above, handed out in collection order (not by test count)."""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class SharedFixtureFileScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return _scheduling_unit(nodeid.split("::", 1)[0])

    config.option.loadscopereorder = False
    return SharedFixtureFileScheduling(config, log)


# ---------------------------------------------------------------------------------------
# Hermetic environment
# ---------------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _hermetic_env(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """No developer PIPELINE_* variables, one worker, and an empty cwd (no stray `.env` file)."""
    for name in list(os.environ):
        if name.startswith("PIPELINE_"):
            monkeypatch.delenv(name, raising=False)
    # One process per step unless a test asks for workers: a pool per multi-instrument test
    # would cost seconds of start-up each (test_parallel.py covers the pool).
    monkeypatch.setenv("PIPELINE_WORKERS", "1")
    cwd = tmp_path_factory.mktemp("cwd")
    monkeypatch.chdir(cwd)
    return cwd


@pytest.fixture(autouse=True)
def _no_process_settings() -> Iterator[None]:
    """What a pipeline resource hands core for the process (metric exporters, master key, lake
    encryption) does not outlive the test that initialized it."""
    yield
    from market_pipeline.core.lake import parquet_io
    from market_pipeline.core.security import crypto
    from market_pipeline.core.telemetry import telemetry

    telemetry.configure(telemetry.NO_EXPORT)
    crypto.use_master_key(None)
    parquet_io.use_lake_encryption(False)

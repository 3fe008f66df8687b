"""A small pipeline-made lake for the read API, the hftbacktest export and the research guide
(session fixture `research_lake`, built once per test run however many pytest-xdist workers use it)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from filelock import FileLock

from market_pipeline_tests.support.cadence import TEST_CADENCE
from market_pipeline_tests.support.project import PROJECT_DAGSTER_YAML, VENV_BIN, subprocess_env

RESEARCH_DAYS = (dt.date(2024, 3, 1), dt.date(2024, 3, 2), dt.date(2024, 3, 3))
RESEARCH_INSTRUMENT = "BINANCE:BTC-USDT"


@pytest.fixture(scope="session")
def research_lake(tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> dict[str, Path]:
    """Three synthetic days made by `market-pipeline run` (once per test run): the first two pass
    every check (the second continues from the first's checkpoint), the last has off-grid prices,
    so raw_book_deltas' blocking price_precision check fails and no books, bars or reports follow.
    Returns {"data": data dir, "home": DAGSTER_HOME}; tests copy it before changing anything.

    On pytest-xdist workers, the way pytest-xdist documents for a session fixture that must run
    once ("Making session-scoped fixtures execute only once"): the first worker to take the lock
    builds the lake in the directory all workers' temp dirs share and records its paths there; the
    others wait for the lock and read them. (Grouping the user files on one worker with
    `xdist_group` marks and `--dist loadgroup` does not work here: pytest-xdist 3.8 renames the
    grouped tests' node ids through `Item._nodeid`, which pytest 9 no longer reads.)"""
    if worker_id == "master":  # one process: the session scope alone builds it once
        return _build(tmp_path_factory.mktemp("research_lake"))
    shared = tmp_path_factory.getbasetemp().parent  # this run's, shared by its workers
    record = shared / "research_lake.json"
    with FileLock(str(record) + ".lock"):
        if record.is_file():
            paths = json.loads(record.read_text())
        else:
            try:
                paths = {name: str(path) for name, path in _build(shared / "research_lake").items()}
            except Exception as error:  # the other workers fail at once instead of building it again
                record.write_text(json.dumps({"failed": f"{type(error).__name__}: {error}"}))
                raise
            record.write_text(json.dumps(paths))
    if "failed" in paths:
        pytest.fail(f"research_lake failed on another worker: {paths['failed']}")
    return {name: Path(path) for name, path in paths.items()}


def _build(root: Path) -> dict[str, Path]:
    import subprocess

    home, data = root / "dagster_home", root / "data"
    home.mkdir(parents=True)
    (home / "dagster.yaml").write_text(PROJECT_DAGSTER_YAML.read_text())
    env = {name: value for name, value in subprocess_env().items() if not name.startswith("PIPELINE_")}
    env.update(
        DAGSTER_HOME=str(home),
        PIPELINE_DATA_DIR=str(data),
        PIPELINE_INSTRUMENTS=RESEARCH_INSTRUMENT,
        PIPELINE_START_DATE="2024-01-01",
        PIPELINE_WORKERS="1",
        **TEST_CADENCE,
        PIPELINE_SYNTHETIC__SCALE="0.005",
        PIPELINE_SYNTHETIC__FAULTS__OFF_GRID_PRICES="3",
        PIPELINE_SYNTHETIC__FAULTS__DAYS=json.dumps([RESEARCH_DAYS[-1].isoformat()]),
    )
    start, end = RESEARCH_DAYS[0].isoformat(), RESEARCH_DAYS[-1].isoformat()
    proc = subprocess.run(
        [str(VENV_BIN / "market-pipeline"), "run", "--start-date", start, "--end-date", end],
        env=env,
        cwd=root,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 1 and "raw_book_deltas price_precision" in proc.stdout, proc.stdout + proc.stderr
    return {"data": data, "home": home}

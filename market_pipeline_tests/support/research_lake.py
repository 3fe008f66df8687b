"""A small pipeline-made lake for the read API, the hftbacktest export and the research guide
(session fixture `research_lake`)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from market_pipeline_tests.support.project import PROJECT_DAGSTER_YAML, VENV_BIN, subprocess_env

RESEARCH_DAYS = (dt.date(2024, 3, 1), dt.date(2024, 3, 2), dt.date(2024, 3, 3))
RESEARCH_INSTRUMENT = "BINANCE:BTC-USDT"


@pytest.fixture(scope="session")
def research_lake(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Three synthetic days made by `market-pipeline run` (once per session): the first two pass
    every check (the second continues from the first's checkpoint), the last has off-grid prices,
    so raw_book_deltas' blocking price_precision check fails and no books, bars or reports follow.
    Returns {"data": data dir, "home": DAGSTER_HOME}; tests copy it before changing anything."""
    import json
    import subprocess

    root = tmp_path_factory.mktemp("research_lake")
    home, data = root / "dagster_home", root / "data"
    home.mkdir()
    (home / "dagster.yaml").write_text(PROJECT_DAGSTER_YAML.read_text())
    env = {name: value for name, value in subprocess_env().items() if not name.startswith("PIPELINE_")}
    env.update(
        DAGSTER_HOME=str(home),
        PIPELINE_DATA_DIR=str(data),
        PIPELINE_INSTRUMENTS=RESEARCH_INSTRUMENT,
        PIPELINE_START_DATE="2024-01-01",
        PIPELINE_WORKERS="1",
        PIPELINE_SYNTHETIC__SCALE="0.005",
        PIPELINE_BOOK__SAMPLE_INTERVAL_MS="60000",
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

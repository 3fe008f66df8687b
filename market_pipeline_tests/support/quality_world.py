"""validation_reports' world: one run of raw -> books -> validation with every check over two small
synthetic days, one clean and one with repairable faults (module fixtures `world`, `world_env`)."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from market_pipeline_tests.support.dagster_instance import assets_named, code_location, range_tags

CLEAN, FAULTED = dt.date(2024, 3, 1), dt.date(2024, 3, 2)
INSTRUMENT = "BINANCE:BTC-USDT"

ENV = {
    "PIPELINE_INSTRUMENTS": INSTRUMENT,
    "PIPELINE_START_DATE": "2024-01-01",
    "PIPELINE_SYNTHETIC__SCALE": "0.02",
    "PIPELINE_SYNTHETIC__FAULTS__DROPPED_MESSAGES": "3",
    "PIPELINE_SYNTHETIC__FAULTS__OUT_OF_ORDER_ROWS": "1",
    "PIPELINE_SYNTHETIC__FAULTS__CLOCK_SKEW_EPISODES": "1",
    "PIPELINE_SYNTHETIC__FAULTS__FLOAT_NOISE_PRICES": "2",
    "PIPELINE_SYNTHETIC__FAULTS__DAYS": json.dumps([FAULTED.isoformat()]),
}


RAW_AND_BOOKS = ("raw_trades", "raw_book_snapshots", "raw_book_deltas", "reconstructed_books")


def all_definitions(defs):
    """raw -> books -> validation of the code location `defs`, with every check but freshness."""
    checks = [c for c in defs.asset_checks if all(key.name != "freshness" for key in c.check_keys)]
    return [*assets_named(defs, *RAW_AND_BOOKS, "validation_reports"), *checks]


@contextmanager
def world_run(root: Path, selection: Callable, **materialize) -> Iterator[dict]:
    """One in-process run over both days of what `selection(defs)` picks, in `root` (its own
    DAGSTER_HOME and data dir); yields {"instance", "result", "settings", "root"} with ENV still set."""
    import dagster as dg

    from market_pipeline.settings import load_settings

    (root / "dh").mkdir()
    with pytest.MonkeyPatch.context() as mp:
        for name, value in {**ENV, "PIPELINE_DATA_DIR": str(root / "data"), "DAGSTER_HOME": str(root / "dh")}.items():
            mp.setenv(name, value)
        instance = dg.DagsterInstance.get()
        settings = load_settings()
        defs = code_location(settings)
        result = dg.materialize(
            selection(defs),
            instance=instance,
            resources=defs.resources,
            tags=range_tags(CLEAN.isoformat(), FAULTED.isoformat()),
            **materialize,
        )
        try:
            yield {"instance": instance, "result": result, "settings": settings, "root": root}
        finally:
            instance.dispose()


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """One run of raw -> books -> validation with every check over both days."""
    with world_run(tmp_path_factory.mktemp("quality"), all_definitions, raise_on_error=False) as run:
        yield run


@pytest.fixture
def world_env(world, monkeypatch):
    """The module's environment again (the autouse hermetic fixture clears PIPELINE_* per test)."""
    for name, value in {
        **ENV,
        "PIPELINE_DATA_DIR": str(world["root"] / "data"),
        "DAGSTER_HOME": str(world["root"] / "dh"),
    }.items():
        monkeypatch.setenv(name, value)
    return world

"""One Dagster run of what `source_agreement` needs (the raw tables, the books, the agreement and its
checks) for a range of days, and the two warehouse tables it wrote; and the world of the tests of a
capture as the reference of a bought day (test_okx_source_agreement.py, test_kraken_source_agreement.py):
a synthetic vendor day damaged on demand as the primary, its undamaged day rendered as a capture of
its exchange as the reference."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import dagster as dg
import duckdb
import polars as pl
import pytest

from market_pipeline_tests.support.cadence import TEST_CADENCE
from market_pipeline_tests.support.dagster_instance import assets_named, code_location, range_tags

AGREEMENT_ASSETS = ("raw_trades", "raw_book_snapshots", "raw_book_deltas", "reconstructed_books", "source_agreement")


def run_agreement(
    settings, start: dt.date, end: dt.date
) -> tuple[dg.ExecuteInProcessResult, pl.DataFrame, pl.DataFrame]:
    """(the run's result, `source_agreement` by day, `source_agreement_hourly` by day and hour)."""
    defs = code_location(settings)
    checks = [c for c in defs.asset_checks or [] if "source_agreement" in str(list(c.check_keys)[0])]
    with dg.DagsterInstance.ephemeral() as instance:
        result = dg.materialize(
            [*assets_named(defs, *AGREEMENT_ASSETS), *checks],
            resources=defs.resources,
            tags=range_tags(start.isoformat(), end.isoformat()),
            instance=instance,
            raise_on_error=False,
        )
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as con:
        daily = con.sql("SELECT * FROM main.source_agreement ORDER BY dt").pl()
        hourly = con.sql("SELECT * FROM main.source_agreement_hourly ORDER BY dt, hour").pl()
    return result, daily, hourly


NS_PER_HOUR = 3_600_000_000_000


def counts_by_hour(day: dt.date, times: list[int]) -> dict[int, int]:
    """How many of the exchange times fall in each UTC hour of `day` (hours without one left out)."""
    midnight = int(dt.datetime.combine(day, dt.time(), dt.UTC).timestamp()) * 1_000_000_000
    counts: dict[int, int] = {}
    for t in times:
        hour = (t - midnight) // NS_PER_HOUR
        counts[hour] = counts.get(hour, 0) + 1
    return counts


def hours_with(hourly: pl.DataFrame, column: str) -> dict[int, int]:
    """{hour: value} of the hourly rows where `column` is above 0."""
    rows = hourly.filter(pl.col(column) > 0)
    return dict(zip(rows["hour"].to_list(), rows[column].to_list(), strict=True))


def run_capture_reference(tmp: Path, key: str, tick_size: str, reference: str, faults: dict, day: dt.date):
    """One instrument-day of `key` (lot 0.00000001, scale 0.01, the tests' cadence): the synthetic
    vendor with `faults` as the primary, its undamaged day rendered as a capture (`reference`'s
    exchange) as the reference. (the run's result, `source_agreement` by day, by hour, the faults
    the vendor day's manifest records, the written `CaptureDay`)."""
    from market_pipeline.settings import load_settings
    from market_pipeline.vendors.synthetic.reference import write_reference_capture

    capture_dir = tmp / "captures"
    capture_dir.mkdir()
    (tmp / "dagster_home").mkdir()
    env = {
        "PIPELINE_SOURCE": "synthetic",
        "PIPELINE_INSTRUMENTS": key,
        "PIPELINE_INSTRUMENT_SPECS": json.dumps({key: {"tick_size": tick_size, "lot_size": "0.00000001"}}),
        "PIPELINE_START_DATE": "2024-01-01",
        "PIPELINE_DATA_DIR": str(tmp / "data"),
        "PIPELINE_WORKERS": "1",
        "PIPELINE_SYNTHETIC__SEED": "7",
        "PIPELINE_SYNTHETIC__SCALE": "0.01",
        **TEST_CADENCE,
        "PIPELINE_SYNTHETIC__FAULTS": json.dumps({**faults, "days": [day.isoformat()]}),
        "PIPELINE_CAPTURE_DIR": str(capture_dir),
        "PIPELINE_SOURCES": json.dumps({key: {"primary": "synthetic", "reference": reference}}),
        "DAGSTER_HOME": str(tmp / "dagster_home"),
    }
    with pytest.MonkeyPatch.context() as mp:
        for name, value in env.items():
            mp.setenv(name, value)
        settings = load_settings()
        (instrument,) = settings.universe
        written = write_reference_capture(settings.synthetic, instrument, day, tmp / "undamaged", capture_dir)
        result, daily, hourly = run_agreement(settings, day, day)
        exchange, symbol = key.split(":")
        truth_dir = settings.data_dir / "sources" / "synthetic" / "_ground_truth" / "synthetic"
        manifest_path = truth_dir / f"exchange={exchange}" / f"symbol={symbol}" / f"dt={day}" / "manifest.json"
        return result, daily, hourly, json.loads(manifest_path.read_text())["faults"], written

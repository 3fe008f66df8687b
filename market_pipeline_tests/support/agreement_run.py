"""One Dagster run of what `source_agreement` needs (the raw tables, the books, the agreement and its
checks) for a range of days, and the two warehouse tables it wrote; and the world of the tests of an
exchange's capture as the reference of a bought day of that exchange (`reference_agreement`)."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
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
# The agreement's figures a vendor day that only lost messages and trades leaves at 0.
UNTOUCHED_BY_DROPS = (
    "messages_extra",
    "delayed_messages",
    "trades_extra",
    "trades_price_differs",
    "trades_size_differs",
    "trades_side_differs",
    "snapshots_differing",
)


@dataclass
class ReferenceAgreement:
    """A synthetic vendor day damaged on demand against its undamaged day rendered as a capture."""

    result: dg.ExecuteInProcessResult
    daily: pl.DataFrame  # source_agreement
    hourly: pl.DataFrame  # source_agreement_hourly
    faults: dict  # the vendor day's manifest's faults: what was damaged, with exchange times
    written: object  # the capture's CaptureDay (messages, tickers, trades written)
    settings: object  # the run's PipelineSettings


def reference_agreement(
    tmp: Path, key: str, spec: dict[str, str], reference: str, faults: dict[str, int], day: dt.date
) -> ReferenceAgreement:
    """One instrument-day of `key` (tick and lot in `spec`) at scale 0.01 and the tests' cadence:
    the synthetic vendor's day with `faults` as the primary, the same day generated undamaged and
    written as a capture of its exchange (`write_reference_capture`) as the reference `reference`
    (a capture source's name), and one Dagster run of the raw, books and agreement assets."""
    from market_pipeline.settings import load_settings
    from market_pipeline.vendors.synthetic.reference import write_reference_capture

    capture_dir = tmp / "captures"
    capture_dir.mkdir()
    (tmp / "dagster_home").mkdir()
    env = {
        "PIPELINE_SOURCE": "synthetic",
        "PIPELINE_INSTRUMENTS": key,
        "PIPELINE_INSTRUMENT_SPECS": json.dumps({key: spec}),
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
        truth_dir = settings.data_dir / "sources" / "synthetic" / "_ground_truth" / "synthetic"
        partition = truth_dir / f"exchange={instrument.exchange}" / f"symbol={instrument.symbol}" / f"dt={day}"
        manifest = json.loads((partition / "manifest.json").read_text())
    return ReferenceAgreement(result, daily, hourly, manifest["faults"], written, settings)


def counts_by_hour(day: dt.date, times: list[int]) -> dict[int, int]:
    """How many of the exchange times `times` (ns) fall in each UTC hour of `day`."""
    midnight = int(dt.datetime.combine(day, dt.time(), dt.UTC).timestamp()) * 1_000_000_000
    counts: dict[int, int] = {}
    for t in times:
        hour = (t - midnight) // NS_PER_HOUR
        counts[hour] = counts.get(hour, 0) + 1
    return counts


def hours(hourly: pl.DataFrame, column: str) -> dict[int, int]:
    """`column` of the hours where it is above 0, by hour."""
    rows = hourly.filter(pl.col(column) > 0)
    return dict(zip(rows["hour"].to_list(), rows[column].to_list(), strict=True))

"""One Dagster run of what `source_agreement` needs (the raw tables, the books, the agreement and its
checks) for a range of days, and the two warehouse tables it wrote."""

from __future__ import annotations

import datetime as dt

import dagster as dg
import duckdb
import polars as pl

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

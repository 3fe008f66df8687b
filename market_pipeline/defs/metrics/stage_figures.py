"""Per-stage performance of an instrument-day, read back from the upstream assets' latest
materialization of that partition in the Dagster event log (no stage is re-run or re-timed).
"""

from __future__ import annotations

import dagster as dg
import polars as pl

from market_pipeline.defs.common.recorded import latest_metadata
from market_pipeline.defs.common.stage_metrics import USAGE_FIELDS

# Upstream assets whose metadata carries `<instrument> seconds / events_per_second / peak_rss_mb`.
STAGES = ("raw_trades", "raw_book_snapshots", "raw_book_deltas", "reconstructed_books")
BOOK_STAGE = "reconstructed_books"
_COLUMN_OF_FIELD = {"seconds": "seconds", "events_per_second": "events_per_s", "peak_rss_mb": "peak_rss_mb"}


# Explicit types: a column that is null on the first run must not fix the table's type wrongly.
STAGE_SCHEMA: dict[str, pl.DataType] = {
    **{f"{stage}_{_COLUMN_OF_FIELD[f]}": pl.Float64 for stage in STAGES for f in USAGE_FIELDS},
    "book_batches": pl.Int64,
    "book_start_mode": pl.String,
    "book_materialized_run_id": pl.String,
}


def stage_figures(instance: dg.DagsterInstance, partition: str, instruments: list[str]) -> dict[str, dict[str, object]]:
    """instrument -> performance columns of one day (None where a stage left no figure)."""
    by_stage = {stage: latest_metadata(instance, dg.AssetKey(stage), partition) for stage in STAGES}
    figures: dict[str, dict[str, object]] = {}
    for key in instruments:
        row: dict[str, object] = {}
        for stage, (meta, _) in by_stage.items():
            for f in USAGE_FIELDS:
                value = meta.get(f"{key} {f}")
                row[f"{stage}_{_COLUMN_OF_FIELD[f]}"] = float(value) if isinstance(value, (int, float)) else None
        book_meta, book_run = by_stage[BOOK_STAGE]
        detail = book_meta.get(f"{key} detail")
        batches = detail.get("batches") if isinstance(detail, dict) else None
        row["book_batches"] = int(batches) if isinstance(batches, int) else None
        start_mode = book_meta.get(f"{key} start_mode")
        row["book_start_mode"] = str(start_mode) if start_mode is not None else None
        row["book_materialized_run_id"] = book_run
        figures[key] = row
    return figures

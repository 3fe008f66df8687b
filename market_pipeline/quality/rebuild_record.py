"""What upstream materializations recorded for a day: the rebuild's counters, missing instruments.

`reconstructed_books` records the kernel's counters (`RebuildResult.counters`, e.g.
`crossed_events`) under `"<EXCHANGE:SYMBOL> detail"` of each daily partition; figures that only
the replay itself can know are read back from there.
"""

from __future__ import annotations

import datetime as dt

import dagster as dg

REBUILD_ASSET = dg.AssetKey("reconstructed_books")
RAW_DELTAS_ASSET = dg.AssetKey("raw_book_deltas")


def missing_instruments(instance: dg.DagsterInstance, day: dt.date) -> set[str]:
    """Instruments the source has no data for on the day (e.g. no capture ran), as raw_book_deltas
    recorded them. Checks and validation skip these instead of failing on absent files."""
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=RAW_DELTAS_ASSET, asset_partitions=[day.isoformat()]), limit=1
    ).records
    if not records:
        return set()
    value = getattr(records[0].asset_materialization.metadata.get("missing"), "value", None)
    return {str(key) for key in value} if isinstance(value, list) else set()


def rebuild_counters(instance: dg.DagsterInstance, instrument_key: str, day: dt.date) -> dict[str, int] | None:
    """The latest materialization's counters for one instrument-day, or None when unrecorded."""
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=REBUILD_ASSET, asset_partitions=[day.isoformat()]), limit=1
    ).records
    if not records:
        return None
    metadata = records[0].asset_materialization.metadata
    detail = metadata.get(f"{instrument_key} detail")
    value = getattr(detail, "value", None)
    if not isinstance(value, dict) or not isinstance(value.get("counters"), dict):
        return None
    return {str(k): int(v) for k, v in value["counters"].items()}

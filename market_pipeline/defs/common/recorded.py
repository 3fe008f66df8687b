"""What upstream materializations recorded for a day, read back from the Dagster event log.

`raw_book_deltas` records the rows it imported and the instruments the source lacked;
`reconstructed_books` records the kernel's counters (`RebuildResult.counters`, e.g.
`crossed_events`) under `"<EXCHANGE:SYMBOL> detail"`. Figures that only those stages can know
are read back from here rather than recomputed.
"""

from __future__ import annotations

import datetime as dt

import dagster as dg

REBUILD_ASSET = dg.AssetKey("reconstructed_books")
RAW_DELTAS_ASSET = dg.AssetKey("raw_book_deltas")
RAW_ASSETS = (RAW_DELTAS_ASSET, dg.AssetKey("raw_book_snapshots"), dg.AssetKey("raw_trades"))
# Raw partition metadata: {instrument: why} of the instruments whose import failed that day while
# others were imported; downstream stages leave out those instrument-days only.
SKIPPED_INSTRUMENTS = "skipped_instruments"


def latest_materialization(
    instance: dg.DagsterInstance, asset_key: dg.AssetKey, partition: str
) -> dg.EventLogRecord | None:
    """The event-log record of the latest materialization of `asset_key` for `partition`, if any."""
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=asset_key, asset_partitions=[partition]), limit=1
    ).records
    return records[0] if records else None


def latest_metadata(
    instance: dg.DagsterInstance, asset_key: dg.AssetKey, partition: str
) -> tuple[dict[str, object], str | None]:
    """(metadata values, run id) of the latest materialization of `asset_key` for `partition`."""
    record = latest_materialization(instance, asset_key, partition)
    if record is None or record.asset_materialization is None:
        return {}, None
    metadata = record.asset_materialization.metadata
    return {name: value.value for name, value in metadata.items()}, record.run_id


def missing_instruments(instance: dg.DagsterInstance, day: dt.date) -> set[str]:
    """Instruments without raw data for the day: the source has none (e.g. no capture ran), as
    raw_book_deltas recorded them, or an import of one of the raw tables failed for them while the
    day's other instruments were imported (SKIPPED_INSTRUMENTS). The downstream stages and their
    checks leave these out instead of failing on absent files."""
    recorded = _raw_metadata(instance, day)  # each raw table's latest record, read once
    value = recorded[RAW_DELTAS_ASSET].get("missing")
    missing = {str(key) for key in value} if isinstance(value, list) else set()
    return missing | set(_skipped(recorded))


def skipped_instruments(instance: dg.DagsterInstance, day: dt.date) -> dict[str, str]:
    """{instrument: why} of the instruments whose raw import failed on the day (any raw table)."""
    return _skipped(_raw_metadata(instance, day))


def _raw_metadata(instance: dg.DagsterInstance, day: dt.date) -> dict[dg.AssetKey, dict[str, object]]:
    return {key: latest_metadata(instance, key, day.isoformat())[0] for key in RAW_ASSETS}


def _skipped(recorded: dict[dg.AssetKey, dict[str, object]]) -> dict[str, str]:
    found: dict[str, str] = {}
    for metadata in recorded.values():
        value = metadata.get(SKIPPED_INSTRUMENTS)
        if isinstance(value, dict):
            found.update({str(k): str(v) for k, v in value.items()})
    return found


def recorded_rows(instance: dg.DagsterInstance, instrument_key: str, day: dt.date) -> int | None:
    """Rows the raw_book_deltas materialization recorded for the instrument-day."""
    value = latest_metadata(instance, RAW_DELTAS_ASSET, day.isoformat())[0].get(f"{instrument_key} rows")
    return None if value is None else int(value)


def rebuild_counters(instance: dg.DagsterInstance, instrument_key: str, day: dt.date) -> dict[str, int] | None:
    """The latest materialization's counters for one instrument-day, or None when unrecorded."""
    value = latest_metadata(instance, REBUILD_ASSET, day.isoformat())[0].get(f"{instrument_key} detail")
    if not isinstance(value, dict) or not isinstance(value.get("counters"), dict):
        return None
    return {str(k): int(v) for k, v in value["counters"].items()}

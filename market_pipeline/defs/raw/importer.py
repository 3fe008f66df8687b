"""Import one vendor table for one instrument-day into the raw lake."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from market_pipeline.core.instruments import Instrument
from market_pipeline.core.lake.files import write_parquet_atomic
from market_pipeline.core.lake.ingest import FileRejected, check_file, quarantine_file, record_rejected_rows
from market_pipeline.core.lake.paths import PARTITION_FILE, raw_partition_dir
from market_pipeline.core.security.audit import audit_read, audit_scope
from market_pipeline.defs.common.resources import PipelineSettings
from market_pipeline.vendors.base import VendorSource


@dataclass
class PartitionStats:
    """What one instrument-day import wrote; numbers the UI plots across partitions."""

    instrument: str
    day: dt.date
    rows: int
    bytes: int
    path: Path
    quarantined_rows: int = 0
    first_received_time: int | None = None
    last_received_time: int | None = None
    first_sequence: int | None = None
    last_sequence: int | None = None


@dataclass
class ImportFailure:
    instrument: str
    day: dt.date
    message: str
    quarantined: list[Path] = field(default_factory=list)


class PartitionRejected(Exception):
    def __init__(self, failure: ImportFailure):
        self.failure = failure
        super().__init__(failure.message)


def import_partition(
    source: VendorSource,
    settings: PipelineSettings,
    table: str,
    instrument: Instrument,
    day: dt.date,
    run_id: str,
) -> PartitionStats:
    """Fetch, schema-check and atomically write one partition.

    If any file of the day is rejected, every rejected file is quarantined and the partition
    is left as it was (a previous good import stays in place): a day is written whole or not at all.
    Every file read and written is recorded in the audit trail as `raw.import`.
    """
    with audit_scope("raw.import", settings.data_dir, dt=day, instrument=instrument.key, table=table):
        return _import_partition(source, settings, table, instrument, day, run_id)


def _import_partition(
    source: VendorSource, settings: PipelineSettings, table: str, instrument: Instrument, day: dt.date, run_id: str
) -> PartitionStats:
    lake_dir = settings.lake_dir
    tolerance_ns = settings.partition_tolerance_minutes * 60 * 1_000_000_000
    files = source.fetch(table, instrument, day)
    checked, rejected = [], []
    for path in files:
        audit_read(path)
        try:
            checked.append(check_file(path, table, day, tolerance_ns))
        except FileRejected as exc:
            rejected.append(exc)
    if rejected:
        quarantined = [
            quarantine_file(lake_dir, table, instrument.exchange, instrument.symbol, day, exc, run_id)
            for exc in rejected
        ]
        reasons = "; ".join(f"{exc.path}: {exc.reason}" for exc in rejected)
        raise PartitionRejected(
            ImportFailure(instrument.key, day, f"{table} {instrument.key} {day}: {reasons}", quarantined)
        )

    good = pl.concat([c.good for c in checked], how="vertical")
    bad = pl.concat([c.bad for c in checked], how="vertical")
    target = raw_partition_dir(lake_dir, table, instrument.exchange, instrument.symbol, day) / PARTITION_FILE
    record_rejected_rows(lake_dir, table, instrument.exchange, instrument.symbol, day, bad)
    size = write_parquet_atomic(good, target)
    stats = PartitionStats(instrument.key, day, good.height, size, target, quarantined_rows=bad.height)
    if good.height and "received_time" in good.columns:
        stats.first_received_time = int(good["received_time"].min())
        stats.last_received_time = int(good["received_time"].max())
    if good.height and "sequence_number" in good.columns:
        stats.first_sequence = int(good["sequence_number"].min())
        stats.last_sequence = int(good["sequence_number"].max())
    return stats

"""Import one vendor table for one instrument-day into a lake: the raw stage's `lake/raw`, or the
reference area of `source_agreement` (defs/agreement/reference.py), which passes its own `lake_dir`."""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from market_pipeline.core.errors import InputDataError
from market_pipeline.core.instruments import Instrument
from market_pipeline.core.lake import parquet_io
from market_pipeline.core.lake.batches import MESSAGE_TABLES, message_aligned
from market_pipeline.core.lake.files import copy_file_atomic, link_file_atomic
from market_pipeline.core.lake.ingest import (
    FileRejected,
    PartitionWriter,
    VendorFile,
    in_raw_encoding,
    iter_checked,
    iter_trade_ids,
    open_vendor_file,
    quarantine_file,
    record_rejected_rows,
)
from market_pipeline.core.lake.paths import PARTITION_FILE, raw_partition_dir, stats_partition_dir
from market_pipeline.core.lake.schemas import TABLE_SCHEMAS
from market_pipeline.core.quality.day_stats_builder import DayStatsBuilder
from market_pipeline.core.quality.duplicate_rows import repeated_hashes, trade_id_hashes
from market_pipeline.core.read_ahead import read_ahead
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
    # Exact duplicate rows found (identical in every column) and how many were dropped as
    # provably lossless (docs/data-formats.md, "Duplicate rows").
    duplicate_rows: int = 0
    duplicate_rows_dropped: int = 0
    conflicting_trade_ids: int = 0  # trades: an id seen again with other values (kept)
    quarantined_outside_day: int = 0  # of quarantined_rows: received_time beyond the day's tolerance
    rows_outside_day: int = 0  # kept rows received outside the UTC day, within the tolerance
    out_of_order_rows: int = 0  # trades: received before an earlier trade of the file order
    stats_dir: Path | None = None  # the day statistics (core/quality/day_stats.py)


@dataclass
class ImportFailure:
    instrument: str
    day: dt.date
    message: str
    quarantined: list[Path] = field(default_factory=list)


class PartitionRejected(InputDataError):
    """A vendor file of the instrument-day was quarantined, so the day is not written."""

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


def _reject(
    settings: PipelineSettings,
    table: str,
    instrument: Instrument,
    day: dt.date,
    run_id: str,
    rejected: list[FileRejected],
    origin: Callable[[Path], str],
) -> PartitionRejected:
    """The day's refusal, each rejected file named as the user knows it (`origin`: the source's
    original of a converted or downloaded copy), with the copy that was checked quarantined."""
    quarantined = [
        quarantine_file(
            settings.lake_dir, table, instrument.exchange, instrument.symbol, day, exc, run_id, origin(exc.path)
        )
        for exc in rejected
    ]
    reasons = "; ".join(f"{origin(exc.path)}: {exc.reason}" for exc in rejected)
    return PartitionRejected(
        ImportFailure(instrument.key, day, f"{table} {instrument.key} {day}: {reasons}", quarantined)
    )


# An import keeping less than this share of the rows the partition already holds is refused: it
# would replace a good day with a fragment of it (e.g. the in-tolerance rows of another day's file).
MIN_SHARE_OF_EXISTING_PARTITION = 0.5


def refuse_wrong_day(
    files: list[Path], day: dt.date, kept: int, outside: int, kept_before: int, target: Path, names: list[str]
) -> None:
    """Raise FileRejected when the files are of another day: most of their rows lie outside `day`
    (beyond the tolerance), or what they keep is a small fraction of the partition already in the lake.
    `names` are the files as the user knows them; the message lists them when there are several (the
    refusal itself names the first)."""
    together = f" ({', '.join(names)})" if len(names) > 1 else ""
    if outside > kept:
        raise FileRejected(
            files[0] if files else target,
            f"{outside:,} of {outside + kept:,} rows lie outside {day} (UTC): a file of another day?{together}; "
            "refused whole, the partition in the lake is unchanged",
        )
    if kept_before and kept < MIN_SHARE_OF_EXISTING_PARTITION * kept_before:
        raise FileRejected(
            files[0] if files else target,
            f"keeps {kept:,} rows where {target} holds {kept_before:,}: refused so as not to replace a good "
            f"day with a fragment of it{together}; if the vendor really shrank the day, move {target} aside "
            "and import again",
        )


def _takes_as_is(vendors: list[VendorFile]) -> bool:
    """Whether the day's one file may become its partition as it is, should the import keep every
    row: a file in the lake's raw encoding and schema (`ingest.in_raw_encoding`: the cached tables
    of the Tardis and capture sources), and a lake whose partitions are not encrypted."""
    return len(vendors) == 1 and not parquet_io.lake_encrypted() and in_raw_encoding(vendors[0])


def _import_partition(
    source: VendorSource, settings: PipelineSettings, table: str, instrument: Instrument, day: dt.date, run_id: str
) -> PartitionStats:
    """One pass over the day in row batches: schema-check, split off bad rows, drop lossless
    duplicates, write, and gather the day statistics the raw checks read."""
    lake_dir = settings.lake_dir
    ex, sym = instrument.exchange, instrument.symbol
    tolerance_ns = settings.partition_tolerance_minutes * 60 * 1_000_000_000
    files = source.fetch(table, instrument, day)

    @functools.cache
    def origin(path: Path) -> str:
        return source.origin(table, instrument, day, path)

    vendors: list[VendorFile] = []
    rejected: list[FileRejected] = []
    for path in files:
        audit_read(path)
        try:
            vendors.append(open_vendor_file(path, table))
        except FileRejected as exc:
            rejected.append(exc)
    if rejected:
        raise _reject(settings, table, instrument, day, run_id, rejected, origin)

    repeated = None
    if table == "trades":  # first pass, trade ids only: which ids occur more than once
        try:
            repeated = repeated_hashes([trade_id_hashes(ids) for v in vendors for ids in iter_trade_ids(v)])
        except FileRejected as exc:
            raise _reject(settings, table, instrument, day, run_id, [exc], origin) from None
    contiguous = table == "book_delta_v2" and source.sequence_semantics(instrument) == "contiguous"

    def day_pass() -> tuple[DayStatsBuilder, list[pl.DataFrame], Iterator[pl.DataFrame]]:
        """A fresh pass over the day: its statistics, its bad rows (filled as it goes) and the
        rows the partition keeps, batch by batch."""
        builder = DayStatsBuilder(
            table, day, instrument.tick_size, instrument.lot_size, contiguous=contiguous, repeated_trade_ids=repeated
        )
        bad_parts: list[pl.DataFrame] = []

        def good_frames() -> Iterator[pl.DataFrame]:
            for vendor in vendors:
                for good, bad in iter_checked(vendor, day, tolerance_ns):
                    if not bad.is_empty():
                        bad = bad.with_columns(pl.lit(origin(vendor.path)).alias("_source_file"))
                        bad_parts.append(bad)
                        builder.add_rejected(bad)
                    yield good

        frames = message_aligned(good_frames()) if table in MESSAGE_TABLES else good_frames()
        # Duplicates are dropped on a helper thread a batch ahead of the statistics: on the bench
        # day's Tardis deltas (0.4 s of dropping, 0.7 s of statistics) the pass took 1.4-1.5 s so,
        # against 1.8 s with both on this thread.
        kept = read_ahead((builder.keep(frame) for frame in frames), "import-keep")
        return builder, bad_parts, (builder.measure(frame, offset) for frame, offset in kept)

    target = raw_partition_dir(lake_dir, table, ex, sym, day) / PARTITION_FILE
    schema = vendors[0].expected if vendors else TABLE_SCHEMAS[table]
    kept_before = parquet_io.num_rows(target) if target.is_file() else 0
    names = [origin(p) for p in files]
    try:
        written: int | None = None
        if _takes_as_is(vendors):
            # Measured without writing: when every row is kept, the file already is the partition.
            (whole,) = vendors
            builder, bad_parts, rows = day_pass()
            for _ in rows:
                pass
            if builder.rows == whole.rows:  # rows are only ever set aside or dropped, never changed
                outside = builder.counts["quarantined_outside_day"]
                refuse_wrong_day(files, day, builder.rows, outside, kept_before, target, names)
                # The source's own converted copy is shared by a link; a user's own file is copied,
                # so that a change made to it later cannot reach the lake.
                place = link_file_atomic if names[0] != str(whole.path) else copy_file_atomic
                written = place(whole.path, target)
        if written is None:
            builder, bad_parts, rows = day_pass()
            with PartitionWriter(target, schema) as writer:
                for frame in rows:
                    writer.write(frame)
                # Raised inside the writer's block: the partition in the lake stays as it was.
                outside = builder.counts["quarantined_outside_day"]
                refuse_wrong_day(files, day, builder.rows, outside, kept_before, target, names)
            written = writer.bytes
    except FileRejected as exc:
        raise _reject(settings, table, instrument, day, run_id, [exc], origin) from None

    bad = pl.concat(bad_parts, how="vertical") if bad_parts else pl.DataFrame()
    record_rejected_rows(lake_dir, table, ex, sym, day, bad)
    day_stats = builder.finish(written)
    directory = stats_partition_dir(lake_dir, table, ex, sym, day)
    day_stats.write(directory)
    summary = day_stats.summary
    return PartitionStats(
        instrument.key,
        day,
        builder.rows,
        written,
        target,
        quarantined_rows=bad.height,
        first_received_time=summary["first_received_time"],  # type: ignore[arg-type]
        last_received_time=summary["last_received_time"],  # type: ignore[arg-type]
        first_sequence=summary["first_sequence"],  # type: ignore[arg-type]
        last_sequence=summary["last_sequence"],  # type: ignore[arg-type]
        duplicate_rows=int(summary["duplicate_rows"]),  # type: ignore[arg-type]
        duplicate_rows_dropped=int(summary["duplicate_rows_dropped"]),  # type: ignore[arg-type]
        conflicting_trade_ids=int(summary["conflicting_trade_ids"]),  # type: ignore[arg-type]
        quarantined_outside_day=int(summary["quarantined_outside_day"]),  # type: ignore[arg-type]
        rows_outside_day=int(summary["rows_outside_day"]),  # type: ignore[arg-type]
        out_of_order_rows=int(summary["out_of_order_received"]),  # type: ignore[arg-type]
        stats_dir=directory,
    )

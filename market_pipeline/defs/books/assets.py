"""`reconstructed_books`: full order books rebuilt from raw deltas, checked against vendor snapshots."""

import datetime as dt

import dagster as dg
import pyarrow.parquet as pq

from market_pipeline.core.book.rebuild import Grid, RebuildResult, rebuild_day
from market_pipeline.core.lake.catalog import create_parquet_view
from market_pipeline.core.lake.files import atomic_path
from market_pipeline.core.lake.paths import (
    PARTITION_FILE,
    book_agreement_dir,
    books_partition_dir,
    checkpoint_path,
    raw_partition_dir,
)
from market_pipeline.core.telemetry import telemetry
from market_pipeline.defs.common.stage_metrics import record_rebuild, usage_metadata
from market_pipeline.defs.common.partitions import daily_partitions
from market_pipeline.vendors.binance.rebuild import rebuild_capture_instrument_day
from market_pipeline.defs.raw.assets import (
    raw_book_deltas,
    raw_book_snapshots,
    raw_book_ticker,
    raw_depth_snapshots,
    raw_trades,
)
from market_pipeline.defs.common.resources import DUCKDB_POOL, PipelineResource
from market_pipeline.core.security.audit import audit_read, audit_scope
from market_pipeline.settings import Instrument, PipelineSettings
from market_pipeline.vendors.registry import sequence_semantics

BOOKS_GROUP = "books"


def rebuild_instrument_day(settings: PipelineSettings, instrument: Instrument, day: dt.date) -> RebuildResult:
    lake = settings.lake_dir
    ex, sym = instrument.exchange, instrument.symbol
    deltas = raw_partition_dir(lake, "book_delta_v2", ex, sym, day) / PARTITION_FILE
    book = raw_partition_dir(lake, "book", ex, sym, day) / PARTITION_FILE
    for needed in (deltas, book):
        if not needed.is_file():
            raise FileNotFoundError(f"{instrument.key} {day}: raw partition missing: {needed}")
    for read in (deltas, book, checkpoint_path(lake, ex, sym, day - dt.timedelta(days=1))):
        audit_read(read)  # the previous day's checkpoint only if it exists
    result = rebuild_day(
        deltas_path=deltas,
        book_path=book,
        output_path=books_partition_dir(lake, ex, sym, day) / PARTITION_FILE,
        checkpoint_in=checkpoint_path(lake, ex, sym, day - dt.timedelta(days=1)),
        checkpoint_out=checkpoint_path(lake, ex, sym, day),
        grid=Grid(instrument.tick_size, instrument.lot_size),
        day=day,
        contiguous=sequence_semantics(settings, instrument) == "contiguous",
        depth=settings.book.depth,
        interval_ms=settings.book.sample_interval_ms,
    )
    with atomic_path(book_agreement_dir(lake, ex, sym, day) / PARTITION_FILE) as tmp:
        pq.write_table(result.agreement, tmp)
    return result


def _metadata(instrument: Instrument, r: RebuildResult) -> dict[str, object]:
    c = r.counters
    return {
        f"{instrument.key} messages": c["messages"],
        f"{instrument.key} deltas_applied": c["deltas_applied"],
        f"{instrument.key} gaps": c["sequence_gaps"] + c["divergences"] + c["out_of_order_messages"],
        f"{instrument.key} fills": c["fills"],
        f"{instrument.key} crossed_events": c["crossed_events"],
        f"{instrument.key} precision_loss_events": r.precision_events,
        f"{instrument.key} vendor_snapshot_match_share": (
            c["vendor_snapshots_matched"] / c["vendor_snapshots"] if c["vendor_snapshots"] else 0.0
        ),
        f"{instrument.key} deltas_per_second": r.rows_in / r.seconds if r.seconds else 0.0,
        f"{instrument.key} peak_rss_mb": r.peak_rss_bytes / 2**20,
        f"{instrument.key} start_mode": r.start_mode,
        f"{instrument.key} detail": dg.MetadataValue.json(
            {"counters": c, "hourly": r.hourly, "precision_examples": r.precision_examples[:20],
             "batches": r.batches, "seconds": round(r.seconds, 3), "output": str(r.output)}
        ),
    }


def _rebuild_capture(
    context: dg.AssetExecutionContext,
    settings: PipelineSettings,
    instrument: Instrument,
    day: dt.date,
    day_meta: dict[str, object],
    totals: dict[str, int],
) -> None:
    """The Binance-rules path; an instrument-day no capture covers is recorded as missing."""
    with (
        audit_scope("book.rebuild", settings.data_dir, dt=day, instrument=instrument.key),
        telemetry.measure_stage("reconstructed_books", instrument=instrument.key) as usage,
    ):
        result = rebuild_capture_instrument_day(settings, instrument, day)
    if result is None:
        day_meta["missing_instruments"] = int(day_meta.get("missing_instruments", 0)) + 1  # type: ignore[call-overload]
        day_meta[f"{instrument.key} missing"] = "no capture covers this instrument-day"
        context.log.warning(f"{instrument.key} {day}: no capture covers this instrument-day; recorded as missing")
        return
    day_meta.update(result.metadata(instrument.key))
    day_meta.update(usage_metadata("reconstructed_books", instrument.key, usage, result.counters["diffs"]))
    totals["deltas_applied"] += result.counters["deltas_applied"]
    totals["gaps"] += result.counters["gaps"]
    context.log.info(
        f"{instrument.key} {day}: {result.counters['applied']} of {result.counters['diffs']} diffs applied, "
        f"{result.counters['gaps']} gaps, {result.counters['ticker_mismatches']} ticker mismatches, "
        f"{result.counters['rows_written']} rows, start={result.start_mode}, {result.seconds:.1f}s"
    )


@dg.asset(
    group_name=BOOKS_GROUP,
    partitions_def=daily_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    # The last three feed the Binance-rules path (PIPELINE_SOURCE=capture) only.
    deps=[raw_book_deltas, raw_book_snapshots, raw_depth_snapshots, raw_book_ticker, raw_trades],
    pool=DUCKDB_POOL,  # refreshes the books.* views in the warehouse
    kinds={"parquet", "numba"},
)
def reconstructed_books(context: dg.AssetExecutionContext, pipeline: PipelineResource) -> dg.MaterializeResult:
    """Top-N books per instrument-day, sampled at vendor snapshots and on a fixed interval."""
    settings = pipeline.settings()
    days = [dt.date.fromisoformat(key) for key in context.partition_keys]
    totals = {"deltas_applied": 0, "gaps": 0, "fills": 0}
    for day in days:
        day_meta: dict[str, object] = {}
        for instrument in settings.universe:
            if settings.source == "capture":
                _rebuild_capture(context, settings, instrument, day, day_meta, totals)
                continue
            with (
                audit_scope("book.rebuild", settings.data_dir, dt=day, instrument=instrument.key),
                telemetry.measure_stage("reconstructed_books", instrument=instrument.key) as usage,
            ):
                result = rebuild_instrument_day(settings, instrument, day)
            meta = _metadata(instrument, result)
            # Events are exchange messages; the peak covers the rebuild and its agreement table.
            meta.update(usage_metadata("reconstructed_books", instrument.key, usage, result.counters["messages"]))
            record_rebuild(instrument.key, result)
            day_meta.update(meta)
            totals["deltas_applied"] += result.counters["deltas_applied"]
            totals["gaps"] += meta[f"{instrument.key} gaps"]
            totals["fills"] += result.counters["fills"]
            context.log.info(
                f"{instrument.key} {day}: {result.counters['deltas_applied']} deltas, "
                f"{result.counters['rows_written']} rows, start={result.start_mode}, {result.seconds:.1f}s"
            )
        day_meta["rows"] = sum(
            v for k, v in day_meta.items() if k.endswith(" deltas_applied") and isinstance(v, int)
        )
        context.add_asset_metadata(day_meta, partition_key=day.isoformat())
    lake = settings.lake_dir
    with telemetry.timed("mdp_sink_commit_seconds", stage="reconstructed_books", sink="duckdb_view"):
        create_parquet_view(settings.warehouse_path, "books", "reconstructed_books", lake, "books")
        create_parquet_view(settings.warehouse_path, "books", "vendor_agreement", lake, "book_agreement")
    telemetry.flush()  # a step process may end right after this step: export its metrics now
    return dg.MaterializeResult(metadata={"days_in_run": len(days), **totals})


book_assets = [reconstructed_books]

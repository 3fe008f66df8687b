"""`source_agreement`: each instrument-day of the primary source against its reference source
(`PIPELINE_SOURCES`), one warehouse row per instrument-day and 24 hourly rows (core/quality/agreement.py).

An instrument-day is compared when both sources have it, and its `status` says by which matching:
`update_id` where the instrument's primary carries the exchange's update ids (Crypto Lake),
`exchange_time` otherwise (Tardis), `no_common_ids` where the primary should carry them but its
messages share no id with the reference's (matched by exchange time; the row's `note` says so).
Otherwise its row says why not: instruments without a
reference get no row, a day the reference does not cover (no capture was running) is
`no_reference_data`, a day the primary lacks is `no_vendor_data`.
The day's rows are also written beside the lake (`lake/agreement/...`) for the checks.
"""

import datetime as dt
import tempfile

import dagster as dg
import polars as pl

from market_pipeline.core.book.fixed_point import Grid
from market_pipeline.core.instruments import Instrument
from market_pipeline.core.lake import parquet_io
from market_pipeline.core.lake.parquet_io import write_lake_parquet_atomic
from market_pipeline.core.lake.paths import (
    PARTITION_FILE,
    agreement_dir,
    books_partition_dir,
    checkpoint_path,
    make_private_dirs,
    raw_partition_dir,
)
from market_pipeline.core.quality.agreement import HOURLY_SCHEMA, AgreementInputs, compare_day, day_summary
from market_pipeline.core.quality.agreement_report import write_agreement_report
from market_pipeline.core.quality.agreement_status import COMPARED, EXCHANGE_TIME, UPDATE_ID
from market_pipeline.core.telemetry import progress
from market_pipeline.defs.agreement.reference import import_reference_day
from market_pipeline.defs.common.backfill import SINGLE_RUN
from market_pipeline.defs.common.blocked import days_to_run
from market_pipeline.defs.common.json_logs import stage_log_fields
from market_pipeline.defs.common.lake_reads import reads_lake
from market_pipeline.defs.common.recorded import missing_instruments
from market_pipeline.defs.common.resources import DUCKDB_POOL, IO_MANAGER_ROW_COUNT, PipelineSettings, warehouse_table
from market_pipeline.vendors.base import DayNotCovered
from market_pipeline.vendors.registry import build_source, get_vendor, source_of

AGREEMENT_GROUP = "agreement"
DAILY = dg.AssetKey("source_agreement")
HOURLY = dg.AssetKey("source_agreement_hourly")
UPSTREAM = ["raw_trades", "raw_book_snapshots", "raw_book_deltas", "reconstructed_books"]
DAY_FILE, HOURS_FILE = "day.parquet", "hourly.parquet"


def matching(settings: PipelineSettings, instrument: Instrument, reference: str) -> str:
    """How the instrument's primary is matched to its reference: by update id where it carries them
    and the reference has ids to match (a Kraken capture has none)."""
    by_id = get_vendor(settings.primary_source(instrument.key)).update_ids and get_vendor(reference).message_ids
    return UPDATE_ID if by_id else EXCHANGE_TIME


def agreement_inputs(
    settings: PipelineSettings, reference: str, reference_lake, instrument: Instrument, day: dt.date
) -> AgreementInputs:
    ex, sym = instrument.exchange, instrument.symbol

    def raw(lake, table: str):
        return raw_partition_dir(lake, table, ex, sym, day) / PARTITION_FILE

    vendor_books = books_partition_dir(settings.lake_dir, ex, sym, day) / PARTITION_FILE
    reference_books = books_partition_dir(reference_lake, ex, sym, day) / PARTITION_FILE
    compare_books = vendor_books.is_file() and reference_books.is_file()
    tickers = raw(reference_lake, "book_ticker")  # none from a capture without a top-of-book stream (Kraken's)
    return AgreementInputs(
        day=day,
        grid=Grid(instrument.tick_size, instrument.lot_size),
        matching=matching(settings, instrument, reference),
        ticker_time_ns=get_vendor(reference).ticker_time_ns(instrument),
        message_time_ns=get_vendor(reference).message_time_ns,
        contiguous=source_of(build_source(settings), instrument).sequence_semantics(instrument) == "contiguous",
        vendor_deltas=raw(settings.lake_dir, "book_delta_v2"),
        vendor_trades=raw(settings.lake_dir, "trades"),
        vendor_snapshots=raw(settings.lake_dir, "book"),
        vendor_checkpoint=checkpoint_path(settings.lake_dir, ex, sym, day - dt.timedelta(days=1)),
        vendor_books=vendor_books if compare_books else None,
        reference_deltas=raw(reference_lake, "book_delta_v2"),
        reference_trades=raw(reference_lake, "trades"),
        reference_tickers=tickers if tickers.is_file() else None,
        reference_books=reference_books if compare_books else None,
    )


def agree_instrument_day(
    settings: PipelineSettings, instrument: Instrument, day: dt.date, run_id: str, missing: set[str]
) -> tuple[dict[str, object], pl.DataFrame]:
    """(the day row, the hourly rows) of one instrument-day with a reference source."""
    reference = settings.reference_source(instrument.key)
    assert reference is not None
    primary = settings.primary_source(instrument.key)
    row: dict[str, object] = {"dt": day, "instrument": instrument.key, "primary": primary, "reference": reference}
    hourly = pl.DataFrame(schema=HOURLY_SCHEMA)
    if instrument.key in missing:
        return {**row, "status": "no_vendor_data"}, hourly
    try:
        imported = import_reference_day(settings, reference, instrument, day, run_id)
    except DayNotCovered as exc:
        return {**row, "status": "no_reference_data", "note": str(exc)}, hourly
    scratch_root = settings.data_dir / "scratch"
    make_private_dirs(scratch_root)
    with tempfile.TemporaryDirectory(prefix="agreement-", dir=scratch_root) as scratch:
        compared = compare_day(
            agreement_inputs(settings, reference, imported.lake_dir, instrument, day),
            scratch_root / scratch,
            settings.agreement.batch_rows,
            min(settings.agreement.top_levels, settings.book.depth),
        )
    note = {"note": compared.note} if compared.note else {}
    return {**row, "status": compared.status, **note, **day_summary(compared.hourly)}, compared.hourly


def _write_lake(settings: PipelineSettings, instrument: Instrument, day: dt.date, row: dict, hourly: pl.DataFrame):
    directory = agreement_dir(settings.lake_dir, instrument.exchange, instrument.symbol, day)
    write_lake_parquet_atomic(pl.DataFrame([row]), directory / DAY_FILE)
    write_lake_parquet_atomic(hourly, directory / HOURS_FILE)


def read_day_row(settings: PipelineSettings, instrument: Instrument, day: dt.date) -> dict[str, object] | None:
    """The day row `source_agreement` wrote for the instrument-day, None when it wrote none."""
    path = agreement_dir(settings.lake_dir, instrument.exchange, instrument.symbol, day) / DAY_FILE
    return parquet_io.read_frame(path).row(0, named=True) if path.is_file() else None


@reads_lake
def agree_days(context: dg.AssetExecutionContext, settings: PipelineSettings):
    days = days_to_run(context, checks_block=False)
    compared = [i for i in settings.universe if settings.reference_source(i.key)]
    rows: list[dict[str, object]] = []
    hours: list[pl.DataFrame] = []
    for day in days:
        missing = missing_instruments(context.instance, day)
        day_rows = hour_rows = 0
        reported: list[tuple[dict[str, object], pl.DataFrame]] = []
        for instrument in compared:
            with progress.task(f"source_agreement {day} {instrument.key}"):
                row, hourly = agree_instrument_day(settings, instrument, day, context.run.run_id, missing)
            _write_lake(settings, instrument, day, row, hourly)
            rows.append(row)
            reported.append((row, hourly))
            hours.append(hourly.select(pl.lit(day).alias("dt"), pl.lit(instrument.key).alias("instrument"), pl.all()))
            day_rows += 1
            hour_rows += hourly.height
            context.log.info(
                f"source_agreement {day} {instrument.key}: {row['status']}"
                + (
                    f", messages missing {row['messages_missing']}, trades missing {row['trades_missing']}, "
                    f"ticker agreement {row['ticker_agreement_share']}"
                    if row["status"] in COMPARED
                    else ""
                )
                + (f" ({row['note']})" if row.get("note") else ""),
                extra=stage_log_fields([DAILY, HOURLY], day, instrument.key),
            )
        report = write_agreement_report(settings.shared_dir, day, reported)
        context.add_asset_metadata(
            {"rows": day_rows, IO_MANAGER_ROW_COUNT: day_rows, "report": dg.MetadataValue.path(str(report))},
            asset_key=DAILY,
            partition_key=day.isoformat(),
        )
        context.add_asset_metadata(
            {"rows": hour_rows, IO_MANAGER_ROW_COUNT: hour_rows},
            asset_key=HOURLY,
            partition_key=day.isoformat(),
        )
    daily = pl.DataFrame(rows, infer_schema_length=None) if rows else pl.DataFrame(schema={"dt": pl.Date})
    hourly = pl.concat(hours, how="diagonal_relaxed") if hours else pl.DataFrame(schema={"dt": pl.Date})
    yield dg.Output(daily, output_name="source_agreement", metadata={"days_in_run": len(days)})
    yield dg.Output(hourly, output_name="source_agreement_hourly", metadata={"days_in_run": len(days)})


def build_agreement_assets(
    partitions_def: dg.PartitionsDefinition,
    backfill_policy: dg.BackfillPolicy = SINGLE_RUN,
    warehouse_pool: str | None = DUCKDB_POOL,
) -> list[dg.AssetsDefinition]:
    """`warehouse_pool`: the pool of the steps that write the warehouse (None: a DuckLake catalog, many writers)."""

    @dg.multi_asset(
        outs={
            "source_agreement": warehouse_table(
                DAILY,
                "One row per instrument-day with a reference source: messages, trades and bookTickers of the "
                "reference (a capture) against the primary vendor's (docs/data-formats.md, 'Source agreement').",
                group_name=AGREEMENT_GROUP,
                kinds={"duckdb", "polars"},
            ),
            "source_agreement_hourly": warehouse_table(
                HOURLY,
                "24 rows per compared instrument-day: the same figures per UTC hour, with the vendor's receive delay.",
                group_name=AGREEMENT_GROUP,
                kinds={"duckdb", "polars"},
            ),
        },
        partitions_def=partitions_def,
        backfill_policy=backfill_policy,
        deps=UPSTREAM,
        pool=warehouse_pool,  # the IO manager writes main.source_agreement* in the warehouse
    )
    def source_agreement(context: dg.AssetExecutionContext, pipeline: dg.ResourceParam[PipelineSettings]):
        """Compare every instrument-day of the run that has a reference source with it."""
        yield from agree_days(context, pipeline)

    return [source_agreement]

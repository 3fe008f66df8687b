"""A generated synthetic day written as Tardis.dev CSV files (`incremental_book_L2`,
`book_snapshot_25`, `trades`), so the Tardis source can be tested against the ground truth.

The rendering is lossless for the book:
- the day's first message (the whole book as new levels at midnight) becomes the opening
  ``is_snapshot=true`` block, every later message plain updates;
- one ``book_snapshot_25`` row per delta message after which the synthetic vendor took a
  snapshot, stamped like Tardis stamps its snapshots: with the timestamp and local_timestamp of
  that message (the update it shows last); its levels are the true book (levels 20-24 empty);
- times are truncated from nanoseconds to microseconds, as Tardis publishes them.
A rebuild from these files therefore equals the ground truth at every snapshot (two messages
falling in the same microsecond of both clocks would merge into one, as on Tardis; at test scales
that does not happen between snapshots).
Memory is set by the batch size: the day is read and written batch by batch (`day_files`).
"""

from __future__ import annotations

import datetime as dt
import gzip
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from market_pipeline.core.instruments import Instrument
from market_pipeline.core.lake.batches import iter_frames
from market_pipeline.core.lake.files import atomic_path
from market_pipeline.vendors.synthetic.config import SyntheticSettings
from market_pipeline.vendors.synthetic.day_files import (
    SIDE_BATCH_ROWS,
    RowsThrough,
    day_files,
    message_batches,
)
from market_pipeline.vendors.synthetic.generate import generate_day
from market_pipeline.vendors.tardis.csv_format import (
    L2_COLUMNS,
    SNAPSHOT_LEVELS,
    TRADES_COLUMNS,
    file_name,
)

US = 1_000


@dataclass(frozen=True)
class TardisDay:
    files: dict[str, Path]  # Tardis data type -> file
    truth_book_path: Path  # the synthetic ground truth (one row per synthetic snapshot)


def _snapshot_levels(truth_columns: list[str]) -> list[pl.Expr]:
    """book_snapshot_25's level columns from the truth's (levels it does not have are empty)."""
    levels = []
    for i in range(SNAPSHOT_LEVELS):
        for tardis_side, side in (("asks", "ask"), ("bids", "bid")):
            for tardis_field, field in (("price", "price"), ("amount", "size")):
                column = f"{side}_{i}_{field}"
                value = pl.col(column) if column in truth_columns else pl.lit(None, dtype=pl.Float64)
                levels.append(value.alias(f"{tardis_side}[{i}].{tardis_field}"))
    return levels


def write_tardis_day(
    root: Path, instrument: Instrument, day: dt.date, out_dir: Path, exchange_id: str, symbol: str
) -> TardisDay:
    """Render the synthetic day `generate_day` wrote under `root` as Tardis CSV.gz files in `out_dir`,
    batch by batch (memory is set by `day_files`' batch sizes, not by the day)."""
    source = day_files(root, instrument, day)
    names = {"exchange": pl.lit(exchange_id), "symbol": pl.lit(symbol)}
    files = {
        data_type: out_dir / file_name(exchange_id, data_type, day, symbol)
        for data_type in ("incremental_book_L2", "book_snapshot_25", "trades")
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    truth = RowsThrough(source.truth, "sequence_number")
    with ExitStack() as stack:
        out = {
            data_type: stack.enter_context(gzip.open(stack.enter_context(atomic_path(path)), "wb", compresslevel=1))
            for data_type, path in files.items()
        }
        first_message = None
        last_stamp: pl.DataFrame | None = None  # the previous batch's last message, for the snapshots after it
        batches = message_batches(source.deltas)
        deltas = next(batches, None)
        while deltas is not None:
            following = next(batches, None)
            if first_message is None:
                first_message = deltas["sequence_number"][0]
            deltas.select(
                **names,
                timestamp=pl.col("origin_time") // US,
                local_timestamp=pl.col("received_time") // US,
                is_snapshot=pl.col("sequence_number") == first_message,
                side=pl.when(pl.col("side_is_bid")).then(pl.lit("bid")).otherwise(pl.lit("ask")),
                price=pl.col("price"),
                amount=pl.col("size"),
            ).select(L2_COLUMNS).write_csv(out["incremental_book_L2"], include_header=last_stamp is None)

            # One snapshot per message it follows, stamped with that message's times.
            stamps = deltas.group_by("sequence_number", maintain_order=True).agg(
                pl.col("origin_time").first(), pl.col("received_time").first()
            )
            if last_stamp is not None:
                stamps = pl.concat([last_stamp, stamps])
            shown = truth.through(None if following is None else int(deltas["sequence_number"][-1]))
            if shown is not None:
                shown = shown.unique("sequence_number", keep="first", maintain_order=True)
                shown = shown.drop("origin_time", "received_time").join_asof(
                    stamps, on="sequence_number", strategy="backward"
                )
                shown.select(
                    names["exchange"].alias("exchange"),
                    names["symbol"].alias("symbol"),
                    (pl.col("origin_time") // US).alias("timestamp"),
                    (pl.col("received_time") // US).alias("local_timestamp"),
                    *_snapshot_levels(shown.columns),
                ).write_csv(out["book_snapshot_25"], include_header=last_stamp is None)
            last_stamp = stamps.tail(1)
            deltas = following

        for i, trades in enumerate(iter_frames(source.trades, batch_rows=SIDE_BATCH_ROWS)):
            trades.select(
                **names,
                timestamp=pl.col("origin_time") // US,
                local_timestamp=pl.col("received_time") // US,
                id=pl.col("trade_id"),
                side=pl.col("side"),
                price=pl.col("price"),
                amount=pl.col("quantity"),
            ).select(TRADES_COLUMNS).write_csv(out["trades"], include_header=i == 0)
    return TardisDay(files, source.truth)


def generate_tardis_day(
    instrument: Instrument,
    day: dt.date,
    settings: SyntheticSettings,
    work_root: Path,
    out_dir: Path,
    exchange_id: str,
    symbol: str,
) -> TardisDay:
    """Generate the synthetic day under `work_root` and write it as Tardis files in `out_dir`."""
    generate_day(instrument, day, settings, work_root, scale=settings.scale)
    return write_tardis_day(work_root, instrument, day, out_dir, exchange_id, symbol)

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
"""

from __future__ import annotations

import datetime as dt
import gzip
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from market_pipeline.core.instruments import Instrument
from market_pipeline.core.lake.files import atomic_path
from market_pipeline.core.lake.paths import partition_dir
from market_pipeline.vendors.synthetic.config import SyntheticSettings
from market_pipeline.vendors.synthetic.generate import GROUND_TRUTH_DIR, PART_FILE, generate_day
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


def _write_csv_gz(frame: pl.DataFrame, target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(target) as tmp, gzip.open(tmp, "wb", compresslevel=1) as fh:
        frame.write_csv(fh)
    return target


def write_tardis_day(
    root: Path, instrument: Instrument, day: dt.date, out_dir: Path, exchange_id: str, symbol: str
) -> TardisDay:
    """Render the synthetic day `generate_day` wrote under `root` as Tardis CSV.gz files in `out_dir`."""
    ex, sym = instrument.exchange, instrument.symbol
    deltas = pl.read_parquet(partition_dir(root, "book_delta_v2", ex, sym, day) / PART_FILE)
    trades = pl.read_parquet(partition_dir(root, "trades", ex, sym, day) / PART_FILE)
    truth_path = partition_dir(root / GROUND_TRUTH_DIR, "synthetic", ex, sym, day) / "truth_book.parquet"
    truth = pl.read_parquet(truth_path)
    names = {"exchange": pl.lit(exchange_id), "symbol": pl.lit(symbol)}
    files: dict[str, Path] = {}

    first_message = deltas["sequence_number"][0] if deltas.height else None
    l2 = deltas.select(
        **names,
        timestamp=pl.col("origin_time") // US,
        local_timestamp=pl.col("received_time") // US,
        is_snapshot=pl.col("sequence_number") == first_message,
        side=pl.when(pl.col("side_is_bid")).then(pl.lit("bid")).otherwise(pl.lit("ask")),
        price=pl.col("price"),
        amount=pl.col("size"),
    ).select(L2_COLUMNS)
    files["incremental_book_L2"] = _write_csv_gz(
        l2, out_dir / file_name(exchange_id, "incremental_book_L2", day, symbol)
    )

    # One snapshot per message it follows, stamped with that message's times.
    stamps = deltas.group_by("sequence_number", maintain_order=True).agg(
        pl.col("origin_time").first(), pl.col("received_time").first()
    )
    shown = truth.unique("sequence_number", keep="first", maintain_order=True).sort("sequence_number")
    shown = shown.drop("origin_time", "received_time").join_asof(
        stamps.sort("sequence_number"), on="sequence_number", strategy="backward"
    )
    levels = []
    for i in range(SNAPSHOT_LEVELS):
        for tardis_side, side in (("asks", "ask"), ("bids", "bid")):
            for tardis_field, field in (("price", "price"), ("amount", "size")):
                column = f"{side}_{i}_{field}"
                value = pl.col(column) if column in shown.columns else pl.lit(None, dtype=pl.Float64)
                levels.append(value.alias(f"{tardis_side}[{i}].{tardis_field}"))
    snapshots = shown.select(
        names["exchange"].alias("exchange"),
        names["symbol"].alias("symbol"),
        (pl.col("origin_time") // US).alias("timestamp"),
        (pl.col("received_time") // US).alias("local_timestamp"),
        *levels,
    )
    files["book_snapshot_25"] = _write_csv_gz(
        snapshots, out_dir / file_name(exchange_id, "book_snapshot_25", day, symbol)
    )

    tardis_trades = trades.select(
        **names,
        timestamp=pl.col("origin_time") // US,
        local_timestamp=pl.col("received_time") // US,
        id=pl.col("trade_id"),
        side=pl.col("side"),
        price=pl.col("price"),
        amount=pl.col("quantity"),
    ).select(TRADES_COLUMNS)
    files["trades"] = _write_csv_gz(tardis_trades, out_dir / file_name(exchange_id, "trades", day, symbol))
    return TardisDay(files, truth_path)


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

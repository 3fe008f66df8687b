"""Quality measures of one instrument-day, read from the lake (raw tables, rebuilt books, agreement).

Shared by the `validation_reports` asset and the asset checks, so a report and a check never
disagree on a figure. Every reader names the missing file when an input is absent.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow.parquet as pq

from market_pipeline.core.instruments import Instrument
from market_pipeline.core.lake.paths import (
    PARTITION_FILE,
    book_agreement_dir,
    books_partition_dir,
    capture_fidelity_dir,
    raw_partition_dir,
)
from market_pipeline.core.lake.schemas import BOOK_LEVELS, book_level_columns
from market_pipeline.core.quality.precision import grid_flags
from market_pipeline.core.quality.sequence import gap_events, messages

NS_PER_MS = 1_000_000
NS_PER_HOUR = 3_600_000_000_000
WORST_ROWS = 10  # offending rows listed in check metadata and reports


def day_start_ns(day: dt.date) -> int:
    return int(dt.datetime.combine(day, dt.time(), dt.UTC).timestamp()) * 1_000_000_000


def iso(ns: int | None) -> str | None:
    if ns is None:
        return None
    return dt.datetime.fromtimestamp(ns / 1e9, dt.UTC).isoformat(timespec="milliseconds")


def hour_of(column: str, day: dt.date) -> pl.Expr:
    """Hour of the day (0-23) of a ns time, clamped like the book kernel's hourly counters."""
    return ((pl.col(column) - day_start_ns(day)) // NS_PER_HOUR).clip(0, 23).cast(pl.Int32)


@dataclass(frozen=True)
class DayFiles:
    """The lake files of one instrument-day."""

    instrument: Instrument
    day: dt.date
    deltas: Path
    snapshots: Path
    trades: Path
    books: Path
    agreement: Path
    # The capture path rebuilds *to* each REST snapshot (they are its sync points), so there is
    # no independent vendor snapshot to compare against and no agreement table; its bookTicker
    # checks (reconstructed_books metadata) play that role.
    # The capture rebuild's fidelity table (vendors/binance); absent for other sources.
    fidelity: Path
    has_agreement: bool = True
    # Sequence numbers grow by exactly 1 per message (a jump proves a gap), else only monotonic.
    contiguous: bool = False

    @classmethod
    def of(cls, lake: Path, instrument: Instrument, day: dt.date, *, has_agreement: bool, contiguous: bool) -> DayFiles:
        ex, sym = instrument.exchange, instrument.symbol
        return cls(
            instrument=instrument,
            day=day,
            deltas=raw_partition_dir(lake, "book_delta_v2", ex, sym, day) / PARTITION_FILE,
            snapshots=raw_partition_dir(lake, "book", ex, sym, day) / PARTITION_FILE,
            trades=raw_partition_dir(lake, "trades", ex, sym, day) / PARTITION_FILE,
            books=books_partition_dir(lake, ex, sym, day) / PARTITION_FILE,
            agreement=book_agreement_dir(lake, ex, sym, day) / PARTITION_FILE,
            fidelity=capture_fidelity_dir(lake, ex, sym, day) / PARTITION_FILE,
            has_agreement=has_agreement,
            contiguous=contiguous,
        )

    def require(self, path: Path) -> Path:
        if not path.is_file():
            raise FileNotFoundError(f"{self.instrument.key} {self.day}: lake file missing: {path}")
        return path


# ---------------------------------------------------------------------------------------
# Readers
# ---------------------------------------------------------------------------------------


def read_deltas(files: DayFiles) -> pl.DataFrame:
    return pl.read_parquet(files.require(files.deltas))


SNAPSHOT_TOP_SCHEMA = {
    "received_time": pl.Int64,
    "origin_time": pl.Int64,
    "sequence_number": pl.Int64,
    "bid_0_price": pl.Float64,
    "ask_0_price": pl.Float64,
}


def read_snapshot_tops(files: DayFiles) -> pl.DataFrame:
    """Times, sequence numbers and touch prices of the vendor snapshots, in file order."""
    return pl.read_parquet(files.require(files.snapshots), columns=list(SNAPSHOT_TOP_SCHEMA))


AGREEMENT_SCHEMA = {
    "received_time": pl.Int64,
    "sequence_number": pl.Int64,
    "matched": pl.Boolean,
    "mid_deviation_half_ticks": pl.Int64,
    "levels_mismatched": pl.Int64,
    "first_mismatched_level": pl.Int64,
    "synced_before": pl.Boolean,
    "mismatched_level_mask": pl.Int64,
}


def empty_snapshot_tops() -> pl.DataFrame:
    return pl.DataFrame(schema=SNAPSHOT_TOP_SCHEMA)


def read_agreement(files: DayFiles, tops: pl.DataFrame) -> pl.DataFrame:
    """The rebuild's per-snapshot agreement rows beside the vendor snapshot they describe."""
    if not files.has_agreement:
        return pl.DataFrame(
            schema={**AGREEMENT_SCHEMA, "bid_0_price": pl.Float64, "ask_0_price": pl.Float64, "origin_time": pl.Int64}
        )
    agreement = pl.read_parquet(files.require(files.agreement))
    same = agreement.height == tops.height and agreement.select("received_time", "sequence_number").equals(
        tops.select("received_time", "sequence_number")
    )
    if not same:
        raise ValueError(
            f"{files.instrument.key} {files.day}: {files.agreement} ({agreement.height} rows) does not "
            f"line up with the vendor snapshots in {files.snapshots} ({tops.height} rows); "
            "re-materialize reconstructed_books for this day"
        )
    return agreement.with_columns(tops.select("bid_0_price", "ask_0_price", "origin_time"))


def read_books_touch(files: DayFiles) -> pl.DataFrame:
    """Rebuilt touch per sampled row, as floats, sorted by receive time."""
    return (
        pl.read_parquet(
            files.require(files.books),
            columns=["received_time", "sequence_number", "synced", "trigger", "bid_0_price", "ask_0_price"],
        )
        .with_columns(pl.col("bid_0_price", "ask_0_price").cast(pl.Float64))
        .sort("received_time", maintain_order=True)
    )


# ---------------------------------------------------------------------------------------
# Sequence gaps
# ---------------------------------------------------------------------------------------


def gaps(files: DayFiles, deltas: pl.DataFrame, tops: pl.DataFrame) -> pl.DataFrame:
    return gap_events(deltas, tops, files.contiguous)


def gap_summary(events: pl.DataFrame) -> dict[str, int]:
    return {
        "sequence_jumps": int((events["kind"] == "jump").sum()),
        "out_of_order_messages": int((events["kind"] == "out_of_order").sum()),
        "missing_sequence_numbers": int(events["missing_sequence_numbers"].sum()),
        "gaps_repaired": int(events["repaired"].sum()),
        "gaps_unrepaired": int((~events["repaired"]).sum()),
    }


def gap_rows(events: pl.DataFrame, limit: int = WORST_ROWS) -> list[dict[str, object]]:
    """Unrepaired gaps first, then the largest ones."""
    ordered = events.sort(["repaired", "missing_sequence_numbers"], descending=[False, True]).head(limit)
    return [
        {
            "kind": r["kind"],
            "received_time": iso(r["received_time"]),
            "sequence_number": r["sequence_number"],
            "previous_sequence_number": r["previous_sequence_number"],
            "missing_sequence_numbers": r["missing_sequence_numbers"],
            "repaired_by_snapshot_at": iso(r["fill_received_time"]),
            "repaired_by_snapshot_sequence_number": r["fill_sequence_number"],
        }
        for r in ordered.iter_rows(named=True)
    ]


def hourly_gaps(events: pl.DataFrame, agreement: pl.DataFrame, day: dt.date) -> pl.DataFrame:
    """gaps_detected and gaps_filled per hour, counted like the rebuild's counters.

    Detected: sequence jumps and out-of-order messages (at the message's hour) plus
    divergences, i.e. snapshots that disagreed with a book in sync (at the snapshot's hour).
    Filled: snapshots that repaired an open gap or a divergence (at the snapshot's hour).
    """
    divergent = agreement.filter(~pl.col("matched") & pl.col("synced_before"))
    detected = pl.concat(
        [
            events.select(hour_of("received_time", day).alias("hour")),
            divergent.select(hour_of("received_time", day).alias("hour")),
        ]
    )
    fills = pl.concat(
        [
            events.filter("repaired")
            .select("fill_snapshot", "fill_received_time")
            .unique("fill_snapshot")
            .select(hour_of("fill_received_time", day).alias("hour")),
            divergent.select(hour_of("received_time", day).alias("hour")),
        ]
    )
    hours = pl.DataFrame({"hour": pl.Series(range(24), dtype=pl.Int32)})
    return (
        hours.join(detected.group_by("hour").agg(pl.len().alias("gaps_detected")), on="hour", how="left")
        .join(fills.group_by("hour").agg(pl.len().alias("gaps_filled")), on="hour", how="left")
        .with_columns(pl.col("gaps_detected", "gaps_filled").fill_null(0).cast(pl.Int64))
    )


# ---------------------------------------------------------------------------------------
# Clock skew
# ---------------------------------------------------------------------------------------


def skew_messages(deltas: pl.DataFrame) -> pl.DataFrame:
    """One row per message with skew_ms = (received_time - origin_time) in ms."""
    return messages(deltas).with_columns(
        ((pl.col("received_time") - pl.col("origin_time")) / NS_PER_MS).alias("skew_ms")
    )


def skew_aggregates() -> list[pl.Expr]:
    skew = pl.col("skew_ms")
    return [
        skew.quantile(0.01, "linear").alias("skew_p1_ms"),
        skew.quantile(0.50, "linear").alias("skew_p50_ms"),
        skew.quantile(0.99, "linear").alias("skew_p99_ms"),
        skew.max().alias("skew_max_ms"),
        skew.min().alias("skew_min_ms"),
        (skew < 0).mean().alias("skew_negative_share"),
    ]


def hourly_skew(skew: pl.DataFrame, day: dt.date) -> pl.DataFrame:
    hours = pl.DataFrame({"hour": pl.Series(range(24), dtype=pl.Int32)})
    per_hour = skew.group_by(hour_of("received_time", day).alias("hour")).agg(
        *skew_aggregates(), pl.len().alias("messages")
    )
    return hours.join(per_hour, on="hour", how="left").with_columns(pl.col("messages").fill_null(0))


def skew_rows(skew: pl.DataFrame, limit: int = WORST_ROWS) -> list[dict[str, object]]:
    """The messages with the largest |skew|."""
    worst = skew.sort(pl.col("skew_ms").abs(), descending=True).head(limit)
    return [
        {
            "received_time": iso(r["received_time"]),
            "origin_time": iso(r["origin_time"]),
            "sequence_number": r["sequence_number"],
            "skew_ms": round(r["skew_ms"], 3),
        }
        for r in worst.iter_rows(named=True)
    ]


# ---------------------------------------------------------------------------------------
# Precision
# ---------------------------------------------------------------------------------------


def precision_flags(frame: pl.DataFrame, columns: dict[str, str], instrument: Instrument) -> pl.DataFrame:
    """Rows of `frame` with an off-grid or precision-loss value, one row per bad value.

    `columns` maps a float column to "price" or "size" (tick or lot grid).
    """
    keep = [c for c in ("received_time", "sequence_number") if c in frame.columns]
    found = []
    for column, grid in columns.items():
        step = instrument.tick_size if grid == "price" else instrument.lot_size
        values = frame[column].to_numpy()
        off_grid, loss = grid_flags(values, step)
        bad = np.flatnonzero(off_grid | loss)
        found.append(
            frame.select(keep)[bad].with_columns(
                pl.Series("row", bad, pl.Int64),
                pl.lit(column).alias("column"),
                pl.Series("value", values[bad], pl.Float64),
                pl.Series("off_grid", off_grid[bad], pl.Boolean),
                pl.Series("steps", values[bad] / float(step), pl.Float64),
            )
        )
    return pl.concat(found, how="diagonal_relaxed")


def snapshot_precision(files: DayFiles) -> tuple[int, int]:
    """(off_grid, precision_loss) over every price and size of the vendor snapshots.

    Read one column at a time: a day of 100 ms snapshots holds ~70 M floats.
    """
    reader = pq.ParquetFile(files.require(files.snapshots))
    off_total = loss_total = 0
    for column in book_level_columns(BOOK_LEVELS):
        values = reader.read(columns=[column]).column(0).to_numpy()
        step = files.instrument.tick_size if column.endswith("_price") else files.instrument.lot_size
        off_grid, loss = grid_flags(values, step)
        off_total += int(off_grid.sum())
        loss_total += int(loss.sum())
    return off_total, loss_total


def precision_rows(flags: pl.DataFrame, limit: int = WORST_ROWS) -> list[dict[str, object]]:
    if flags.is_empty():
        return []
    worst = flags.sort(["off_grid", "row"], descending=[True, False]).head(limit)
    return [
        {
            "row": r["row"],
            "received_time": iso(r.get("received_time")),
            "sequence_number": r.get("sequence_number"),
            "column": r["column"],
            "value": repr(r["value"]),
            "steps": r["steps"],
            "problem": "off_grid" if r["off_grid"] else "precision_loss",
        }
        for r in worst.iter_rows(named=True)
    ]


DELTA_VALUE_COLUMNS = {"price": "price", "size": "size"}
TRADE_VALUE_COLUMNS = {"price": "price", "quantity": "size"}


# ---------------------------------------------------------------------------------------
# Agreement with the vendor snapshots
# ---------------------------------------------------------------------------------------


def agreement_summary(agreement: pl.DataFrame, instrument: Instrument) -> dict[str, object]:
    tick = float(instrument.tick_size)
    dev = agreement.select(
        (pl.col("mid_deviation_half_ticks").abs() / 2).alias("ticks"),
        (
            pl.col("mid_deviation_half_ticks").abs()
            / 2
            * tick
            / ((pl.col("bid_0_price") + pl.col("ask_0_price")) / 2)
            * 1e4
        ).alias("bps"),
    )
    stats = dev.select(
        pl.col("ticks").max().alias("max_mid_dev_ticks"),
        pl.col("ticks").quantile(0.99, "linear").alias("p99_mid_dev_ticks"),
        pl.col("bps").max().alias("max_mid_dev_bps"),
        pl.col("bps").quantile(0.99, "linear").alias("p99_mid_dev_bps"),
    ).row(0, named=True)
    n = agreement.height
    matched = int(agreement["matched"].sum()) if n else 0
    # Bit L of mismatched_level_mask: level L (bid or ask side) disagreed with the vendor.
    masks = agreement["mismatched_level_mask"].to_numpy()
    by_level = [int(((masks >> level) & 1).sum()) for level in range(BOOK_LEVELS)]
    return {
        "vendor_snapshots": n,
        "snapshots_mismatched": n - matched,
        "snapshot_exact_match_share": matched / n if n else None,
        "divergences": int((~agreement["matched"] & agreement["synced_before"]).sum()) if n else 0,
        **{k: (float(v) if v is not None else None) for k, v in stats.items()},
        "mismatches_by_level": by_level,
        "levels_mismatched_mean": float(agreement.filter(~pl.col("matched"))["levels_mismatched"].mean() or 0.0),
    }


def agreement_rows(agreement: pl.DataFrame, limit: int = WORST_ROWS) -> list[dict[str, object]]:
    worst = (
        agreement.filter(~pl.col("matched"))
        .sort([pl.col("mid_deviation_half_ticks").abs(), "levels_mismatched"], descending=True)
        .head(limit)
    )
    return [
        {
            "received_time": iso(r["received_time"]),
            "sequence_number": r["sequence_number"],
            "mid_deviation_ticks": r["mid_deviation_half_ticks"] / 2,
            "levels_mismatched": r["levels_mismatched"],
            "first_mismatched_level": r["first_mismatched_level"],
            "synced_before": r["synced_before"],
        }
        for r in worst.iter_rows(named=True)
    ]


# ---------------------------------------------------------------------------------------
# Crossed books and trades against the book
# ---------------------------------------------------------------------------------------


def crossed_rows(frame: pl.DataFrame) -> pl.DataFrame:
    """Rows whose best bid is at or above the best ask (crossed or locked)."""
    return frame.filter(pl.col("bid_0_price") >= pl.col("ask_0_price"))


def crossed_row_records(frame: pl.DataFrame, limit: int = WORST_ROWS) -> list[dict[str, object]]:
    return [
        {
            "received_time": iso(r["received_time"]),
            "sequence_number": r["sequence_number"],
            "bid_0_price": float(r["bid_0_price"]),
            "ask_0_price": float(r["ask_0_price"]),
        }
        for r in crossed_rows(frame).head(limit).iter_rows(named=True)
    ]


def trades_at_or_inside_touch_share(trades: pl.DataFrame, books: pl.DataFrame) -> float | None:
    """Share of trades printed at or between the rebuilt best bid and ask.

    Each trade is compared with the last in-sync rebuilt row received at or before it (rows
    are sampled at vendor snapshots and on the sampling interval, so this is approximate).
    """
    touch = books.filter("synced").select("received_time", "bid_0_price", "ask_0_price").drop_nulls()
    if trades.is_empty() or touch.is_empty():
        return None
    joined = (
        trades.select("received_time", "price")
        .sort("received_time")
        .join_asof(touch, on="received_time", strategy="backward")
        .drop_nulls("bid_0_price")
    )
    if joined.is_empty():
        return None
    inside = (pl.col("price") >= pl.col("bid_0_price")) & (pl.col("price") <= pl.col("ask_0_price"))
    return float(joined.select(inside.mean()).item())

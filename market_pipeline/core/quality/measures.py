"""Quality measures of one instrument-day, read from the lake (raw tables, rebuilt books, agreement).

Shared by the `validation_reports` asset and the asset checks, so a report and a check never
disagree on a figure. Every reader names the missing file when an input is absent.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl
from numba import njit

from market_pipeline.core.instruments import Instrument
from market_pipeline.core.lake import parquet_io
from market_pipeline.core.lake.paths import (
    PARTITION_FILE,
    book_agreement_dir,
    books_partition_dir,
    capture_fidelity_dir,
    raw_partition_dir,
    stats_partition_dir,
)
from market_pipeline.core.lake.schemas import BOOK_LEVELS
from market_pipeline.core.quality.chain import CHAIN_BREAK, CHAIN_COLUMNS, chain_breaks, has_chain
from market_pipeline.core.quality.day_stats import SKEW, DayStats, compute_day_stats
from market_pipeline.core.quality.precision import grid_flags
from market_pipeline.core.quality.sequence import GAP_SCHEMA, gap_events, messages, repair_gaps
from market_pipeline.core.telemetry import progress

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
    lake: Path | None = None  # the lake root, for the raw tables' day statistics (`day_stats`)

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
            lake=lake,
        )

    def raw_file(self, table: str) -> Path:
        return {"book_delta_v2": self.deltas, "book": self.snapshots, "trades": self.trades}[table]

    def require(self, path: Path) -> Path:
        if not path.is_file():
            raise FileNotFoundError(f"{self.instrument.key} {self.day}: lake file missing: {path}")
        return path


# ---------------------------------------------------------------------------------------
# Readers
# ---------------------------------------------------------------------------------------


def read_deltas(files: DayFiles) -> pl.DataFrame:
    """The whole delta day in memory (~1.6 GB for a realistic day): prefer `day_stats`."""
    return parquet_io.read_frame(files.require(files.deltas))


def sequence_events(files: DayFiles, stats: DayStats) -> pl.DataFrame:
    """The day's gap events before repair (`day_stats.EVENT_SCHEMA`, by receive time): the day
    statistics' sequence events, plus the breaks of the update-id chain when the deltas were
    written from a capture (`chain.py`)."""
    if not has_chain(parquet_io.read_schema(files.require(files.deltas)).names):
        return stats.gaps
    breaks = chain_breaks(iter_frames(files.deltas, CHAIN_COLUMNS))
    return pl.concat([stats.gaps.cast(breaks.schema), breaks]).sort("received_time", maintain_order=True)


def day_stats(files: DayFiles, table: str) -> DayStats:
    """The day statistics of a raw table ("book_delta_v2", "book", "trades"): the ones its import
    wrote beside the day when they still describe the lake file, else computed from the file in
    row batches (bounded memory, one read)."""
    data = files.require(files.raw_file(table))
    contiguous = files.contiguous and table == "book_delta_v2"
    if files.lake is not None:
        ex, sym = files.instrument.exchange, files.instrument.symbol
        stored = DayStats.read(stats_partition_dir(files.lake, table, ex, sym, files.day))
        if stored is not None and stored.matches(data) and bool(stored.summary.get("contiguous")) == contiguous:
            return stored
    return compute_day_stats(
        data, table, files.day, files.instrument.tick_size, files.instrument.lot_size, contiguous=contiguous
    )


SNAPSHOT_TOP_SCHEMA = {
    "received_time": pl.Int64,
    "origin_time": pl.Int64,
    "sequence_number": pl.Int64,
    "bid_0_price": pl.Float64,
    "ask_0_price": pl.Float64,
}


def read_snapshot_tops(files: DayFiles) -> pl.DataFrame:
    """Times, sequence numbers and touch prices of the vendor snapshots, in file order."""
    return parquet_io.read_frame(files.require(files.snapshots), list(SNAPSHOT_TOP_SCHEMA))


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
    agreement = parquet_io.read_frame(files.require(files.agreement))
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
        parquet_io.read_frame(
            files.require(files.books),
            ["received_time", "sequence_number", "synced", "trigger", "bid_0_price", "ask_0_price"],
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
        "chain_breaks": int((events["kind"] == CHAIN_BREAK).sum()),
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
    """(off_grid, precision_loss) over every price and size of the vendor snapshots, from their
    day statistics (`day_stats`)."""
    summary = day_stats(files, "book").summary
    return int(summary["off_grid_values"]), int(summary["precision_loss_events"])


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


# ---------------------------------------------------------------------------------------
# Bounded memory: one instrument-day read in row batches or lazy scans, never whole
# ---------------------------------------------------------------------------------------
# The readers above load a table whole (the raw checks use them). validation_reports and the
# book checks use the ones below instead: the raw deltas (~34 M rows on a realistic day) are
# read in row batches of a few columns, the tables with one row per vendor snapshot or rebuilt
# row through lazy scans that keep only the columns and rows a figure needs. The figures are
# those of the whole-day readers, exactly (quantiles included, see SkewQuantiles).

BATCH_ROWS = 1 << 18
SKEW_QUANTILES = (0.01, 0.50, 0.99)
_DAY_GROUP = 24  # group index of the whole day beside hours 0-23 in SkewQuantiles


def iter_frames(path: Path, columns: list[str], batch_rows: int | None = None) -> Iterator[pl.DataFrame]:
    """The file's `columns` in file order, `batch_rows` rows at a time.

    `pre_buffer=False`: pyarrow's default pre-buffering holds far more than a batch (~0.5 GB
    more on a realistic day of deltas).
    """
    with parquet_io.open_file(path, pre_buffer=False) as reader:
        progress.expect(reader.metadata.num_rows)
        for batch in reader.iter_batches(batch_size=batch_rows or BATCH_ROWS, columns=columns):
            progress.advance(batch.num_rows)
            yield pl.from_arrow(batch)  # type: ignore[misc]


def row_count(path: Path) -> int:
    return parquet_io.num_rows(path)


def linear_quantile(lower: float, upper: float, q: float, n: int) -> float:
    """polars' `quantile(q, "linear")` from the order statistics at floor and ceil of q (n - 1)."""
    index = q * (n - 1)
    return lower + (upper - lower) * (index - math.floor(index))


def quantile_ranks(q: float, n: int) -> tuple[int, int]:
    index = q * (n - 1)
    return math.floor(index), math.ceil(index)


class SkewQuantiles:
    """Exact linear quantiles of the messages' clock skew in each hour 0-23 and over the day
    (group 24), in one pass over the deltas.

    The day statistics' skew histogram (`day_stats`: message counts per hour and bucket of
    skew in ns) says which bucket holds each order statistic a quantile needs and at which
    offset; the pass (`collect`) keeps only the skews that fall in those few buckets. Values
    are ns here and become ms through `_skew_ms`, which preserves their order, so the order
    statistics and the interpolation are those of polars' `quantile(q, "linear")` over ms.
    """

    def __init__(self, histogram: pl.DataFrame, quantiles: tuple[float, ...], day: dt.date) -> None:
        self.quantiles = quantiles
        self._day_start = day_start_ns(day)
        self.sizes = np.zeros(_DAY_GROUP + 1, np.int64)
        # (group, bucket_ns) -> [(rank, offset of the rank within the bucket)]
        self._targets: dict[tuple[int, int], list[tuple[int, int]]] = {}
        self._bucket_counts: dict[tuple[int, int], int] = {}
        per_hour = histogram.select("hour", "bucket_ns", "width_ns", "count")
        day = (
            per_hour.group_by("bucket_ns", "width_ns")
            .agg(pl.col("count").sum())
            .with_columns(pl.lit(_DAY_GROUP, pl.Int32).alias("hour"))
        )
        bounds: dict[int, tuple[int, int]] = {}  # bucket_ns -> the skews it covers [low, high]
        buckets = pl.concat([per_hour.cast({"hour": pl.Int32}), day.select(per_hour.columns)]).sort("hour", "bucket_ns")
        for (group,), part in buckets.group_by("hour", maintain_order=True):
            # Buckets in ascending bucket_ns are in ascending skew order (negative ones too).
            keys, widths = part["bucket_ns"].to_numpy(), part["width_ns"].to_numpy()
            counts = part["count"].to_numpy()
            ends = np.cumsum(counts)
            n = int(ends[-1]) if len(ends) else 0
            self.sizes[int(group)] = n
            for rank in {r for q in quantiles for r in quantile_ranks(q, n)} if n else ():
                at = int(np.searchsorted(ends, rank, side="right"))
                start = int(ends[at - 1]) if at else 0
                key, width = int(keys[at]), int(widths[at])
                self._targets.setdefault((int(group), key), []).append((rank, rank - start))
                self._bucket_counts[(int(group), key)] = int(counts[at])
                bounds[key] = (key, key + width - 1) if key >= 0 else (key - width + 1, key)
        ordered = sorted(bounds.values())
        self._lows = np.array([low for low, _ in ordered], np.int64)
        self._highs = np.array([high for _, high in ordered], np.int64)
        self._buckets = np.array(sorted(bounds), np.int64)  # bucket_ns in the order of _lows
        self._found: list[pl.DataFrame] = []

    def collect(self, received: np.ndarray, origin: np.ndarray, starts: np.ndarray) -> None:
        """The pass: the receive and origin times of rows, `starts` marking the rows that start a
        message (only those count), in any batches."""
        if not len(self._lows) or not len(received):
            return
        rows = _rows_in_buckets(received, origin, starts, self._lows, self._highs)
        if len(rows):
            skew_ns = received[rows] - origin[rows]
            self._found.append(
                pl.DataFrame(
                    {
                        "hour": np.clip((received[rows] - self._day_start) // NS_PER_HOUR, 0, 23),
                        "bucket_ns": self._buckets[np.searchsorted(self._lows, skew_ns, side="right") - 1],
                        "skew_ns": skew_ns.astype(np.int64),
                    }
                )
            )

    def result(self, source: Path) -> dict[int, list[float | None]]:
        """group -> the quantiles in ms, None for an empty group; `source` names the deltas in errors."""
        found = pl.concat(self._found) if self._found else pl.DataFrame(schema=_FOUND_SCHEMA)
        stats: dict[tuple[int, int], float] = {}
        for (group, key), ranks in self._targets.items():
            in_bucket = pl.col("bucket_ns") == key
            scope = in_bucket if group == _DAY_GROUP else in_bucket & (pl.col("hour") == group)
            values = found.filter(scope)["skew_ns"].sort().to_numpy()
            if len(values) != self._bucket_counts[(group, key)]:
                raise ValueError(
                    f"{source}: {len(values)} message skews in [{key} ns ...] of hour {group}, where the day "
                    f"statistics count {self._bucket_counts[(group, key)]}; re-import the day"
                )
            ms = _skew_ms(values, np.zeros(len(values), np.int64))
            for rank, offset in ranks:
                stats[(group, rank)] = float(ms[offset])
        out: dict[int, list[float | None]] = {}
        for group in range(_DAY_GROUP + 1):
            n = int(self.sizes[group])
            out[group] = [
                linear_quantile(stats[(group, quantile_ranks(q, n)[0])], stats[(group, quantile_ranks(q, n)[1])], q, n)
                if n
                else None
                for q in self.quantiles
            ]
        return out


_FOUND_SCHEMA = {"hour": pl.Int64, "bucket_ns": pl.Int64, "skew_ns": pl.Int64}


@njit(cache=True)
def _rows_in_buckets(received, origin, starts, lows, highs):
    """Positions of the message-starting rows whose skew (received - origin) lies in one of the
    disjoint ranges [lows[j], highs[j]] (`lows` sorted): one loop, no temporaries of batch size."""
    found = np.empty(received.shape[0], np.int64)
    n = 0
    for i in range(received.shape[0]):
        if starts[i]:
            skew = received[i] - origin[i]
            j = np.searchsorted(lows, skew, side="right") - 1
            if j >= 0 and skew <= highs[j]:
                found[n] = i
                n += 1
    return found[:n]


@dataclass
class DeltaFigures:
    """What validation needs from one day of raw deltas, from `delta_figures`."""

    delta_rows: int
    messages: int
    events: pl.DataFrame  # gap events, GAP_SCHEMA (as `gaps`)
    skew_day: dict[str, float | None]  # skew_aggregates() over the day
    skew_hourly: pl.DataFrame  # as `hourly_skew`
    skew_worst: list[dict[str, object]]  # as `skew_rows`
    precision: PrecisionTally
    price_decimals_max: int | None


@dataclass
class PrecisionTally:
    """Off-grid and precision-loss counts of a table's columns, with the flags `precision_rows`
    can list (the first WORST_ROWS of each kind per column, in the layout of `precision_flags`)."""

    off_grid: int = 0
    loss: int = 0
    flags: list[pl.DataFrame] = field(default_factory=list)
    _listed: dict[tuple[str, str, bool], int] = field(default_factory=dict)

    def add(
        self, table: str, frame: pl.DataFrame, offset: int, columns: dict[str, str], instrument: Instrument
    ) -> None:
        """Rows `offset`.. of `table` (rows are numbered per table, as in `precision_flags`)."""
        keep = [c for c in ("received_time", "sequence_number") if c in frame.columns]
        for column, grid in columns.items():
            step = instrument.tick_size if grid == "price" else instrument.lot_size
            values = frame[column].to_numpy()
            off_grid, loss = grid_flags(values, step)
            self.off_grid += int(off_grid.sum())
            self.loss += int(loss.sum())
            for kind, mask in ((True, off_grid), (False, loss)):
                room = WORST_ROWS - self._listed.get((table, column, kind), 0)
                if room <= 0 or not mask.any():
                    continue
                bad = np.flatnonzero(mask)[:room]
                self._listed[(table, column, kind)] = self._listed.get((table, column, kind), 0) + len(bad)
                self.flags.append(
                    frame.select(keep)[bad].with_columns(
                        pl.Series("row", bad + offset, pl.Int64),
                        pl.lit(column).alias("column"),
                        pl.Series("value", values[bad], pl.Float64),
                        pl.Series("off_grid", off_grid[bad], pl.Boolean),
                        pl.Series("steps", values[bad] / float(step), pl.Float64),
                    )
                )

    def frame(self) -> pl.DataFrame:
        if not self.flags:
            return pl.DataFrame(schema={"row": pl.Int64, "off_grid": pl.Boolean})
        return pl.concat(self.flags, how="diagonal_relaxed")


def _skew_ms(received: np.ndarray, origin: np.ndarray) -> np.ndarray:
    """skew_ms as `skew_messages` computes it, the same floats: polars divides a column by the
    literal through its reciprocal (a one-row frame it divides exactly, so not polars here)."""
    return (np.asarray(received, np.int64) - np.asarray(origin, np.int64)).astype(np.float64) * (1.0 / NS_PER_MS)


def _message_batches(files: DayFiles, columns: list[str]) -> Iterator[tuple[pl.DataFrame, np.ndarray, int]]:
    """(batch, mask of the rows that start a message, row offset) over the raw deltas in file order.

    A message is a run of rows sharing (received_time, sequence_number), as `sequence.messages`.
    """
    previous: tuple[int, int] | None = None
    offset = 0
    for frame in iter_frames(files.require(files.deltas), columns):
        if frame.is_empty():
            continue
        recv, seq = frame["received_time"].to_numpy(), frame["sequence_number"].to_numpy()
        starts = np.empty(len(recv), bool)
        starts[1:] = (seq[1:] != seq[:-1]) | (recv[1:] != recv[:-1])
        starts[0] = previous is None or previous != (int(seq[0]), int(recv[0]))
        previous = (int(seq[-1]), int(recv[-1]))
        yield frame, starts, offset
        offset += frame.height


def _ms(skew_ns: int | None) -> float | None:
    return None if skew_ns is None else float(_skew_ms(np.array([skew_ns], np.int64), np.zeros(1, np.int64))[0])


def delta_figures(files: DayFiles, snapshot_sequence: np.ndarray, snapshot_received: np.ndarray) -> DeltaFigures:
    """Messages, gaps, clock skew and precision of the day's raw deltas from their day statistics
    (`day_stats`), plus one pass over received_time, origin_time and sequence_number for what the
    statistics hold only approximately: the exact skew quantiles (see SkewQuantiles). Price and
    size are read only when the statistics count off-grid or precision-loss values, to list them.
    The vendor snapshots' sequence numbers and receive times (file order) say which gaps they repair.
    """
    stats = day_stats(files, "book_delta_v2")
    summary = stats.summary
    quantiles = SkewQuantiles(stats.skew_histogram, SKEW_QUANTILES, files.day)
    tally = PrecisionTally()
    bad_values = int(summary["off_grid_values"]) + int(summary["precision_loss_events"])
    times = ["received_time", "origin_time", "sequence_number"]
    for frame, starts, offset in _message_batches(files, [*times, "price", "size"] if bad_values else times):
        if bad_values:
            tally.add("deltas", frame, offset, DELTA_VALUE_COLUMNS, files.instrument)
        quantiles.collect(frame["received_time"].to_numpy(), frame["origin_time"].to_numpy(), starts)
    found = quantiles.result(files.deltas)

    events = sequence_events(files, stats)
    gap_frame = repair_gaps(
        events.cast({c: GAP_SCHEMA[c] for c in events.columns}),
        pl.DataFrame({"sequence_number": snapshot_sequence, "received_time": snapshot_received}),
    )
    by_hour = {r["hour"]: r for r in stats.hourly.iter_rows(named=True)}
    per_hour = [int(by_hour[h]["messages"] or 0) if h in by_hour else 0 for h in range(24)]
    hourly_rows = []
    for hour in range(24):
        r, n = by_hour.get(hour), per_hour[hour]
        p1, p50, p99 = found[hour]
        hourly_rows.append(
            {
                "hour": hour,
                "skew_p1_ms": p1,
                "skew_p50_ms": p50,
                "skew_p99_ms": p99,
                "skew_max_ms": _ms(r["skew_max_ns"]) if n else None,  # type: ignore[index]
                "skew_min_ms": _ms(r["skew_min_ns"]) if n else None,  # type: ignore[index]
                "skew_negative_share": float(r["skew_negative"]) / n if n else None,  # type: ignore[index]
                "messages": n,
            }
        )
    skew_hourly = pl.DataFrame(
        hourly_rows,
        schema={"hour": pl.Int32, **dict.fromkeys(list(hourly_rows[0])[1:-1], pl.Float64), "messages": pl.Int64},
    )
    total = sum(per_hour)
    p1, p50, p99 = found[_DAY_GROUP]
    skew_day = {
        "skew_p1_ms": p1,
        "skew_p50_ms": p50,
        "skew_p99_ms": p99,
        "skew_max_ms": _ms(summary["skew_max_ns"]) if total else None,
        "skew_min_ms": _ms(summary["skew_min_ns"]) if total else None,
        "skew_negative_share": float(summary["skew_negative"]) / total if total else None,
    }
    worst = stats.samples_of(SKEW).select("received_time", "origin_time", "sequence_number")
    worst = worst.with_columns(
        pl.Series("skew_ms", _skew_ms(worst["received_time"].to_numpy(), worst["origin_time"].to_numpy()))
    )
    return DeltaFigures(
        delta_rows=int(summary["rows"]),
        messages=int(summary["messages"]),
        events=gap_frame,
        skew_day=skew_day,
        skew_hourly=skew_hourly,
        skew_worst=skew_rows(worst) if worst.height else [],
        precision=tally,
        price_decimals_max=summary["price_decimals_max"],
    )


def scan_trades(path: Path, instrument: Instrument, tally: PrecisionTally) -> int:
    """Rows of the day's trades, adding their prices' and quantities' precision to `tally`."""
    rows = 0
    for frame in iter_frames(path, ["received_time", "price", "quantity"]):
        tally.add("trades", frame, rows, TRADE_VALUE_COLUMNS, instrument)
        rows += frame.height
    return rows


def trade_figures(files: DayFiles, tally: PrecisionTally) -> int:
    """Rows of the day's trades from their day statistics (`day_stats`); their prices and
    quantities are read into `tally` (`scan_trades`) only when the statistics count off-grid or
    precision-loss values, to list them."""
    summary = day_stats(files, "trades").summary
    if int(summary["off_grid_values"]) + int(summary["precision_loss_events"]):
        return scan_trades(files.require(files.trades), files.instrument, tally)
    return int(summary["rows"])


def snapshot_sequence(files: DayFiles) -> tuple[np.ndarray, np.ndarray]:
    """(sequence_number, received_time) of the vendor snapshots, in file order."""
    frame = parquet_io.read_frame(files.require(files.snapshots), ["sequence_number", "received_time"])
    return frame["sequence_number"].to_numpy().astype(np.int64), frame["received_time"].to_numpy().astype(np.int64)


def scan_snapshot_tops(files: DayFiles) -> pl.LazyFrame:
    return parquet_io.scan(files.require(files.snapshots)).select(list(SNAPSHOT_TOP_SCHEMA))


def scan_books_touch(files: DayFiles) -> pl.LazyFrame:
    """Rebuilt touch per sampled row, as floats, in file order (`read_books_touch` sorts it)."""
    return parquet_io.scan(files.require(files.books)).select(
        "received_time",
        "sequence_number",
        "synced",
        "trigger",
        pl.col("bid_0_price", "ask_0_price").cast(pl.Float64),
    )


def crossed_figures(frame: pl.LazyFrame, by_time: bool) -> tuple[int, list[dict[str, object]]]:
    """(crossed or locked rows, the first WORST_ROWS of them as `crossed_row_records`), by receive
    time (stable) when `by_time` else in file order."""
    crossed = frame.filter(pl.col("bid_0_price") >= pl.col("ask_0_price"))
    count = crossed.select(pl.len()).collect(engine="streaming").item()
    if not count:
        return 0, []
    first = crossed.sort("received_time", maintain_order=True) if by_time else crossed
    return int(count), crossed_row_records(first.head(WORST_ROWS).collect(engine="streaming"))


def touch_share(files: DayFiles) -> float | None:
    """`trades_at_or_inside_touch_share` from scans: only the trades' times and prices and the
    in-sync rebuilt touch are read."""
    touch = (
        scan_books_touch(files)
        .filter("synced")
        .select("received_time", "bid_0_price", "ask_0_price")
        .drop_nulls()
        .sort("received_time", maintain_order=True)
    )
    trades = parquet_io.scan(files.require(files.trades)).select("received_time", "price").sort("received_time")
    inside = (pl.col("price") >= pl.col("bid_0_price")) & (pl.col("price") <= pl.col("ask_0_price"))
    found = (
        trades.join_asof(touch, on="received_time", strategy="backward")
        .drop_nulls("bid_0_price")
        .select(inside.mean().alias("share"), pl.len().alias("n"))
        .collect(engine="streaming")
        .row(0, named=True)
    )
    return float(found["share"]) if found["n"] else None


@dataclass
class AgreementFigures:
    summary: dict[str, object]  # as `agreement_summary`
    worst: list[dict[str, object]]  # as `agreement_rows`
    divergent: pl.DataFrame  # received_time, matched, synced_before of the divergences
    hourly_max_ticks: pl.DataFrame  # hour, max |mid deviation| in ticks (snapshot hours only)


def _scan_agreement(files: DayFiles) -> pl.LazyFrame:
    """The agreement rows beside the vendor snapshots' touch prices, checked to line up."""
    agreement = files.require(files.agreement)
    snapshots = files.require(files.snapshots)
    rows, tops = row_count(agreement), row_count(snapshots)
    mismatch = f"{files.agreement} ({rows} rows) does not line up with the vendor snapshots in {files.snapshots}"
    if rows != tops:
        mismatch += f" ({tops} rows)"
    joined = pl.concat(
        [
            parquet_io.scan(agreement),
            parquet_io.scan(snapshots).select(
                pl.col("received_time").alias("_snapshot_received_time"),
                pl.col("sequence_number").alias("_snapshot_sequence_number"),
                "bid_0_price",
                "ask_0_price",
            ),
        ],
        how="horizontal",
    )
    same = rows == tops and (
        rows == 0
        or joined.select(
            (
                (pl.col("received_time") == pl.col("_snapshot_received_time"))
                & (pl.col("sequence_number") == pl.col("_snapshot_sequence_number"))
            ).all()
        )
        .collect(engine="streaming")
        .item()
    )
    if not same:
        raise ValueError(
            f"{files.instrument.key} {files.day}: {mismatch}; re-materialize reconstructed_books for this day"
        )
    return joined.drop("_snapshot_received_time", "_snapshot_sequence_number")


def agreement_figures(files: DayFiles) -> AgreementFigures:
    """Agreement with the vendor snapshots from scans of the agreement table (exactly the figures
    of `agreement_summary`, `agreement_rows` and `hourly_gaps`' divergences)."""
    instrument, day = files.instrument, files.day
    if not files.has_agreement:
        empty = read_agreement(files, empty_snapshot_tops())
        return AgreementFigures(
            agreement_summary(empty, instrument),
            [],
            empty.select("received_time", "matched", "synced_before"),
            pl.DataFrame(schema={"hour": pl.Int32, "max": pl.Float64}),
        )
    scan = _scan_agreement(files)
    tick = float(instrument.tick_size)
    ticks = pl.col("mid_deviation_half_ticks").abs() / 2
    bps = (
        pl.col("mid_deviation_half_ticks").abs()
        / 2
        * tick
        / ((pl.col("bid_0_price") + pl.col("ask_0_price")) / 2)
        * 1e4
    )
    mask = pl.col("mismatched_level_mask")
    found = (
        scan.select(
            pl.len().alias("n"),
            pl.col("matched").sum().alias("matched"),
            (~pl.col("matched") & pl.col("synced_before")).sum().alias("divergences"),
            ticks.max().alias("max_mid_dev_ticks"),
            ticks.quantile(0.99, "linear").alias("p99_mid_dev_ticks"),
            bps.max().alias("max_mid_dev_bps"),
            bps.quantile(0.99, "linear").alias("p99_mid_dev_bps"),
            *[((mask // (1 << level)) % 2).sum().alias(f"level_{level}") for level in range(BOOK_LEVELS)],
            pl.col("levels_mismatched").filter(~pl.col("matched")).mean().alias("levels_mismatched_mean"),
        )
        .collect(engine="streaming")
        .row(0, named=True)
    )
    n, matched = int(found["n"]), int(found["matched"] or 0)
    stats = ("max_mid_dev_ticks", "p99_mid_dev_ticks", "max_mid_dev_bps", "p99_mid_dev_bps")
    summary = {
        "vendor_snapshots": n,
        "snapshots_mismatched": n - matched,
        "snapshot_exact_match_share": matched / n if n else None,
        "divergences": int(found["divergences"] or 0),
        **{k: (float(found[k]) if found[k] is not None else None) for k in stats},
        "mismatches_by_level": [int(found[f"level_{level}"] or 0) for level in range(BOOK_LEVELS)],
        "levels_mismatched_mean": float(found["levels_mismatched_mean"] or 0.0),
    }
    worst = agreement_rows(
        scan.filter(~pl.col("matched"))
        .sort([pl.col("mid_deviation_half_ticks").abs(), "levels_mismatched"], descending=True, maintain_order=True)
        .head(WORST_ROWS)
        .collect(engine="streaming")
    )
    divergent = (
        scan.filter(~pl.col("matched") & pl.col("synced_before"))
        .select("received_time", "matched", "synced_before")
        .collect(engine="streaming")
    )
    hourly_max = (
        scan.group_by(hour_of("received_time", day).alias("hour"))
        .agg((pl.col("mid_deviation_half_ticks").abs().max() / 2).alias("max"))
        .sort("hour")
        .collect(engine="streaming")
    )
    return AgreementFigures(summary, worst, divergent, hourly_max)

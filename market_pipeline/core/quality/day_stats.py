"""Per-day statistics of a raw table, computed in the import's single pass over the day.

The raw import (core/lake/ingest.py, defs/common/importer.py) already reads every row of an
instrument-day once, in bounded batches. `DayStatsBuilder` rides along that pass and keeps only
small figures: counts, per-hour clock-skew histograms, sequence-gap events and a few sample rows
per kind of problem. `DayStats.write` stores them as small Parquet tables beside the day
(`lake/stats/{table}/exchange=X/symbol=Y/dt=D/`), and the raw checks read those instead of the
day itself (docs/data-formats.md, "Day statistics").

It also decides which exact duplicate rows the import drops (only where dropping is provably
lossless, see `DUPLICATE_RULES`).

Clock skew quantiles come from a histogram whose buckets keep `skew_pass.SKEW_SIGNIFICANT_BITS`
significant bits of |skew| in ns: exact below 1.024 us, within 0.1 % (half a bucket) above.
Minimum, maximum, counts and the negative share are exact.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import numpy as np
import polars as pl
from numba import njit

from market_pipeline.core.lake import parquet_io, storage
from market_pipeline.core.lake.files import write_lake_parquet_atomic, write_text_atomic
from market_pipeline.core.lake.schemas import book_level_columns
from market_pipeline.core.quality.precision import SeenValues, grid_flags, max_decimals
from market_pipeline.core.quality.row_keys import repeated_rows, row_marks
from market_pipeline.core.quality.sequence import GAP_SCHEMA, JUMP, OUT_OF_ORDER, gap_messages, gap_rows
from market_pipeline.core.quality.skew_pass import SkewPass

NS_PER_MS = 1_000_000
NS_PER_MINUTE = 60_000_000_000
NS_PER_HOUR = 3_600_000_000_000
NS_PER_DAY = 86_400_000_000_000
SAMPLE_ROWS = 10  # rows kept per kind of problem (check metadata shows at most this many)
STATS_VERSION = 1

# Which exact duplicates (identical in every column) the import drops, per table.
DUPLICATE_RULES = {
    # A trade is one print identified by its id: the same row again anywhere in the day is the
    # same print. A trade id seen again with other values is counted (conflicting) and kept.
    "trades": "anywhere",
    # Absolute level sizes: the same row twice in a row sets a level to the same size twice, so
    # the second one changes nothing. A repeat further away in the message is counted, kept (a
    # row in between may have changed that level).
    "book_delta_v2": "adjacent",
    # A snapshot row repeated right after itself is the same book state twice.
    "book": "adjacent",
}

# Float columns on the instrument's grid: column -> "price" (tick) or "size" (lot).
PRECISION_COLUMNS: dict[str, dict[str, str]] = {
    "book_delta_v2": {"price": "price", "size": "size"},
    "trades": {"price": "price", "quantity": "size"},
    "book": {c: ("price" if c.endswith("_price") else "size") for c in book_level_columns()},
}
# Tables whose rows group into messages sharing (received_time, sequence_number).
MESSAGE_TABLES = frozenset({"book_delta_v2"})

HOURLY_SCHEMA = {
    "hour": pl.Int32,
    "rows": pl.Int64,
    "messages": pl.Int64,
    "skew_min_ns": pl.Int64,
    "skew_max_ns": pl.Int64,
    "skew_negative": pl.Int64,
}
HISTOGRAM_SCHEMA = {"hour": pl.Int32, "bucket_ns": pl.Int64, "width_ns": pl.Int64, "count": pl.Int64}
PRECISION_SCHEMA = {"column": pl.String, "grid": pl.String, "off_grid": pl.Int64, "precision_loss": pl.Int64}
SAMPLE_SCHEMA = {
    "kind": pl.String,
    "row": pl.Int64,  # row in the lake file (after dropped duplicates)
    "received_time": pl.Int64,
    "origin_time": pl.Int64,
    "sequence_number": pl.Int64,
    "trade_id": pl.String,
    "column": pl.String,
    "value": pl.Float64,
    "steps": pl.Float64,
    "skew_ns": pl.Int64,
    "previous": pl.Int64,  # out of order: the running maximum it fell below
    "dropped": pl.Boolean,
}
EVENT_SCHEMA = {name: GAP_SCHEMA[name] for name in list(GAP_SCHEMA)[:6]}  # gaps before repair
OUTSIDE_SCHEMA = {"minutes_outside_day": pl.Int64, "rows": pl.Int64}

OFF_GRID, PRECISION_LOSS, SKEW = "off_grid", "precision_loss", "skew"
DUPLICATE, CONFLICTING_TRADE_ID = "duplicate", "conflicting_trade_id"
OUT_OF_ORDER_RECEIVED, OUT_OF_ORDER_TRADE_ID = "out_of_order_received", "out_of_order_trade_id"

TABLE_FILES = ("hourly", "skew_histogram", "precision", "samples", "gaps", "origin_outside_day")


def day_start_ns(day: dt.date) -> int:
    return int(dt.datetime.combine(day, dt.time(), dt.UTC).timestamp()) * 1_000_000_000


def _empty(schema: dict[str, pl.DataType]) -> pl.DataFrame:
    return pl.DataFrame(schema=schema)


def _bucket_values(bucket: np.ndarray, width: np.ndarray) -> np.ndarray:
    """A bucket's representative skew (ns): its middle, exact for one-ns buckets."""
    middle = np.abs(bucket) + (width - 1) / 2
    return np.where(bucket < 0, -middle, middle)


def histogram_quantile(histogram: pl.DataFrame, q: float, low: float | None, high: float | None) -> float | None:
    """Quantile (polars' "linear" rule) of the skews in `histogram`, in ns, clamped to [low, high]."""
    if histogram.is_empty():
        return None
    h = histogram.group_by("bucket_ns", "width_ns").agg(pl.col("count").sum()).sort("bucket_ns")
    values = _bucket_values(h["bucket_ns"].to_numpy(), h["width_ns"].to_numpy())
    ends = np.cumsum(h["count"].to_numpy())  # rank r (0-based) sits in the first bucket with ends > r
    n = int(ends[-1])
    rank = q * (n - 1)
    below, above = int(np.floor(rank)), int(np.ceil(rank))
    a = values[np.searchsorted(ends, below, side="right")]
    b = values[np.searchsorted(ends, above, side="right")]
    value = float(a + (b - a) * (rank - below))
    if low is not None:
        value = max(value, low)
    if high is not None:
        value = min(value, high)
    return value


def histogram_count(histogram: pl.DataFrame, above_ns: float | None = None, below_ns: float | None = None) -> int:
    """Skews counted by bucket representative: > above_ns or < below_ns."""
    if histogram.is_empty():
        return 0
    values = _bucket_values(histogram["bucket_ns"].to_numpy(), histogram["width_ns"].to_numpy())
    counts = histogram["count"].to_numpy()
    hit = np.zeros(len(values), dtype=bool)
    if above_ns is not None:
        hit |= values > above_ns
    if below_ns is not None:
        hit |= values < below_ns
    return int(counts[hit].sum())


@dataclass
class DayStats:
    """The statistics of one raw table-day: a one-row summary and small tables."""

    summary: dict[str, object]
    hourly: pl.DataFrame = field(default_factory=lambda: _empty(HOURLY_SCHEMA))
    skew_histogram: pl.DataFrame = field(default_factory=lambda: _empty(HISTOGRAM_SCHEMA))
    precision: pl.DataFrame = field(default_factory=lambda: _empty(PRECISION_SCHEMA))
    samples: pl.DataFrame = field(default_factory=lambda: _empty(SAMPLE_SCHEMA))
    gaps: pl.DataFrame = field(default_factory=lambda: _empty(EVENT_SCHEMA))
    origin_outside_day: pl.DataFrame = field(default_factory=lambda: _empty(OUTSIDE_SCHEMA))

    def write(self, directory: Path) -> None:
        """summary.json plus one Parquet file per table, each written atomically."""
        for name in TABLE_FILES:
            write_lake_parquet_atomic(getattr(self, name), directory / f"{name}.parquet")
        # The summary last: a reader that finds it finds the tables of the same import.
        write_text_atomic(directory / "summary.json", json.dumps(self.summary, indent=2, sort_keys=True) + "\n")

    @classmethod
    def read(cls, directory: Path) -> DayStats | None:
        summary_path = directory / "summary.json"
        if not summary_path.is_file():
            return None
        summary = json.loads(storage.readable(summary_path).read_text())  # inside a step: its local copy
        if summary.get("version") != STATS_VERSION:
            return None
        try:
            tables = {name: parquet_io.read_frame(directory / f"{name}.parquet") for name in TABLE_FILES}
        except (FileNotFoundError, pl.exceptions.PolarsError, OSError):
            return None
        return cls(summary, **tables)

    def matches(self, data_file: Path) -> bool:
        """Whether these statistics describe `data_file` as it is now (rows and bytes)."""
        if not data_file.is_file():
            return False
        rows = parquet_io.num_rows(data_file)
        return self.summary.get("rows") == rows and self.summary.get("data_bytes") == data_file.stat().st_size

    def samples_of(self, kind: str) -> pl.DataFrame:
        return self.samples.filter(pl.col("kind") == kind)

    def precision_flags(self) -> pl.DataFrame:
        """Sample bad values in the shape of `measures.precision_flags` (for `measures.precision_rows`)."""
        return (
            self.samples.filter(pl.col("kind").is_in([OFF_GRID, PRECISION_LOSS]))
            .with_columns((pl.col("kind") == OFF_GRID).alias("off_grid"))
            .select("received_time", "sequence_number", "row", "column", "value", "off_grid", "steps")
        )

    def hourly_skew(self, day: dt.date) -> pl.DataFrame:
        """Per-hour skew figures in ms like `measures.hourly_skew` (quantiles from the histogram)."""
        records = []
        hourly = {r["hour"]: r for r in self.hourly.iter_rows(named=True)}
        for hour in range(24):
            r = hourly.get(hour)
            h = self.skew_histogram.filter(pl.col("hour") == hour)
            messages = int(r["messages"]) if r else 0
            low = r["skew_min_ns"] if r and messages else None
            high = r["skew_max_ns"] if r and messages else None
            q = {p: histogram_quantile(h, p, low, high) for p in (0.01, 0.5, 0.99)}
            records.append(
                {
                    "hour": hour,
                    "skew_p1_ms": None if q[0.01] is None else q[0.01] / NS_PER_MS,
                    "skew_p50_ms": None if q[0.5] is None else q[0.5] / NS_PER_MS,
                    "skew_p99_ms": None if q[0.99] is None else q[0.99] / NS_PER_MS,
                    "skew_max_ms": None if high is None else high / NS_PER_MS,
                    "skew_min_ms": None if low is None else low / NS_PER_MS,
                    "skew_negative_share": (r["skew_negative"] / messages) if messages else None,
                    "messages": messages,
                }
            )
        schema = {"hour": pl.Int32, **dict.fromkeys(list(records[0])[1:-1], pl.Float64), "messages": pl.Int64}
        return pl.DataFrame(records, schema=schema)

    def skew_figures(self) -> dict[str, float | None]:
        """Day figures of `measures.skew_aggregates`, in ms."""
        s = self.summary
        messages = int(s.get("messages") or 0)
        if not messages:
            return {}
        low, high = s["skew_min_ns"], s["skew_max_ns"]
        q = {p: histogram_quantile(self.skew_histogram, p, low, high) for p in (0.01, 0.5, 0.99)}
        return {
            "skew_p1_ms": q[0.01] / NS_PER_MS,
            "skew_p50_ms": q[0.5] / NS_PER_MS,
            "skew_p99_ms": q[0.99] / NS_PER_MS,
            "skew_max_ms": high / NS_PER_MS,
            "skew_min_ms": low / NS_PER_MS,
            "skew_negative_share": int(s["skew_negative"]) / messages,
        }


def trade_id_hashes(ids: pl.Series) -> np.ndarray:
    return ids.cast(pl.String).hash(seed=0).to_numpy()


def repeated_hashes(hashes: list[np.ndarray]) -> np.ndarray:
    """Hashes occurring more than once across the chunks (sorted): candidate duplicate trade ids."""
    if not hashes:
        return np.empty(0, dtype=np.uint64)
    values, counts = np.unique(np.concatenate(hashes), return_counts=True)
    return values[counts > 1]


TIME_COLUMNS = ("received_time", "origin_time", "sequence_number")


def _numpy_chunks(batch: pl.DataFrame, names: list[str]) -> list[dict[str, np.ndarray]]:
    """The columns `names` as numpy arrays chunk by chunk, without a copy (a batch glued from two
    by ingest.message_aligned would be copied whole by every to_numpy); columns whose chunks
    differ in length are rechunked first."""
    columns = [batch[name] for name in names]
    lengths = {tuple(len(c) for c in column.get_chunks()) for column in columns}
    if len(lengths) > 1:
        columns = [column.rechunk() for column in columns]
    parts = zip(*[column.get_chunks() for column in columns], strict=True)
    return [{name: chunk.to_numpy() for name, chunk in zip(names, part, strict=True)} for part in parts if len(part[0])]


@njit(cache=True, nogil=True)
def _time_bounds(received, sequence, origin, start, end):
    """(received min, max, sequence min, max, rows received outside [start, end), rows with
    origin_time outside it) in one pass; an empty `sequence` or `origin` is an absent column."""
    lo = hi = received[0]
    s_lo = s_hi = sequence[0] if sequence.shape[0] else 0
    received_outside = origin_outside = 0
    for i in range(received.shape[0]):
        lo, hi = min(lo, received[i]), max(hi, received[i])
        received_outside += (received[i] < start) | (received[i] >= end)
    for i in range(sequence.shape[0]):
        s_lo, s_hi = min(s_lo, sequence[i]), max(s_hi, sequence[i])
    for i in range(origin.shape[0]):
        origin_outside += (origin[i] < start) | (origin[i] >= end)
    return lo, hi, s_lo, s_hi, received_outside, origin_outside


class DayStatsBuilder:
    """Accumulates the statistics of one raw table-day from its good rows, batch by batch, in file order.

    `add(batch)` returns the rows to write (exact duplicates dropped under DUPLICATE_RULES).
    For `book_delta_v2` every batch must end at a message boundary (ingest.message_aligned).
    For `trades`, `repeated_trade_ids` (hashes from `repeated_hashes`) names the ids that occur
    more than once in the day; only those rows are compared exactly.
    """

    def __init__(
        self,
        table: str,
        day: dt.date,
        tick_size: Decimal,
        lot_size: Decimal,
        *,
        contiguous: bool = False,
        repeated_trade_ids: np.ndarray | None = None,
    ):
        self.table, self.day = table, day
        self.tick_size, self.lot_size = tick_size, lot_size
        self.contiguous = contiguous
        self.start = day_start_ns(day)
        self.rows = 0  # written rows so far
        self.dropping = True  # False: count duplicates but keep them (statistics of a lake file as it is)
        self.counts = dict.fromkeys(
            (
                "quarantined_rows",
                "quarantined_outside_day",
                "rows_outside_day",
                "duplicate_rows",
                "duplicate_rows_dropped",
                "conflicting_trade_ids",
                "messages",
                "skew_negative",
                "out_of_order_received",
                "out_of_order_trade_ids",
            ),
            0,
        )
        self._repeated = repeated_trade_ids if repeated_trade_ids is not None else np.empty(0, dtype=np.uint64)
        self._seen_trades: dict[str, set[tuple]] = {}
        self._last_row: pl.DataFrame | None = None
        self._last_key: tuple[int, int] | None = None
        self._max_sequence: int | None = None
        self._max_received: int | None = None
        self._max_trade_id: int | None = None
        self._numeric_ids = True
        self._first_received = self._last_received = self._min_sequence = self._max_seq_value = None
        self._decimals: int | None = None
        self._seen_prices = SeenValues()
        self._skew_pass = SkewPass(self.start)
        self._outside: list[pl.DataFrame] = []
        self._events: list[pl.DataFrame] = []
        columns = PRECISION_COLUMNS.get(table, {})
        self._precision = {c: [0, 0] for c in columns}
        self._samples: dict[str, pl.DataFrame] = {}

    # ------------------------------------------------------------------ rejected rows

    def add_rejected(self, bad: pl.DataFrame) -> None:
        if bad.is_empty():
            return
        self.counts["quarantined_rows"] += bad.height
        self.counts["quarantined_outside_day"] += int(bad["_reason"].str.contains("outside").sum())

    # ------------------------------------------------------------------ good rows

    def add(self, batch: pl.DataFrame) -> pl.DataFrame:
        if batch.is_empty():
            return batch
        batch = self._drop_duplicates(batch)
        if batch.is_empty():
            return batch
        offset = self.rows
        self.rows += batch.height
        read = [c for c in (*TIME_COLUMNS, *PRECISION_COLUMNS.get(self.table, {})) if c in batch.columns]
        chunks = _numpy_chunks(batch, read)
        self._times(batch, chunks)
        if "origin_time" in batch.columns:
            self._skew(batch, chunks, offset)
        if self.table == "book_delta_v2":
            self._gaps(batch, chunks)
        if self.table == "trades":
            self._trade_order(batch, offset)
        self._precision_batch(batch, chunks, offset)
        self._last_row = batch.tail(1)
        return batch

    def _sample(self, kind: str, frame: pl.DataFrame, *, worst_by: str | None = None) -> None:
        """Keep SAMPLE_ROWS rows of a kind: the first ones, or the largest |worst_by|."""
        if frame.is_empty():
            return
        extra = {
            name: pl.lit(None, dtype)
            for name, dtype in SAMPLE_SCHEMA.items()
            if name not in frame.columns and name != "kind"
        }
        frame = frame.with_columns(pl.lit(kind).alias("kind"), **extra).select(list(SAMPLE_SCHEMA)).cast(SAMPLE_SCHEMA)
        kept = self._samples.get(kind)
        if worst_by is None:
            if kept is not None and kept.height >= SAMPLE_ROWS:
                return
            merged = frame if kept is None else pl.concat([kept, frame])
            self._samples[kind] = merged.head(SAMPLE_ROWS)
        else:
            merged = frame if kept is None else pl.concat([kept, frame])
            self._samples[kind] = merged.sort(pl.col(worst_by).abs(), descending=True, maintain_order=True).head(
                SAMPLE_ROWS
            )

    def _drop_duplicates(self, batch: pl.DataFrame) -> pl.DataFrame:
        columns = batch.columns
        if self.table == "trades":
            return self._drop_trade_duplicates(batch)
        rule = DUPLICATE_RULES.get(self.table)
        if rule is None:
            return batch
        lead = None if self._last_row is None else self._last_row.select(columns)
        hashes, same = row_marks(batch, lead)
        twice = repeated_rows(batch if lead is None else pl.concat([lead, batch]), hashes)
        adjacent, repeat = same[len(hashes) - batch.height :], (same | twice)[len(hashes) - batch.height :]
        n_repeat = int(repeat.sum())
        if not n_repeat:
            return batch
        adjacent, repeat = pl.Series(adjacent), pl.Series(repeat)
        n_adjacent = int(adjacent.sum())
        if not self.dropping:
            adjacent = adjacent & False
            n_adjacent = 0
        self.counts["duplicate_rows"] += n_repeat
        self.counts["duplicate_rows_dropped"] += n_adjacent
        indexed = batch.with_row_index("_i").with_columns(repeat.alias("_repeat"), adjacent.alias("_adjacent"))
        kept_before = (~pl.col("_adjacent")).cast(pl.Int64).cum_sum() - (~pl.col("_adjacent")).cast(pl.Int64)
        sample = (
            indexed.with_columns((kept_before + self.rows).alias("row"))
            .filter("_repeat")
            .with_columns(pl.col("_adjacent").alias("dropped"))
        )
        self._sample(DUPLICATE, sample.select([c for c in sample.columns if c in SAMPLE_SCHEMA]))
        return batch.filter(~adjacent)

    def _drop_trade_duplicates(self, batch: pl.DataFrame) -> pl.DataFrame:
        if not len(self._repeated):
            return batch
        hashes = trade_id_hashes(batch["trade_id"])
        candidates = np.flatnonzero(np.isin(hashes, self._repeated))
        if not len(candidates):
            return batch
        drop = np.zeros(batch.height, dtype=bool)
        conflicting = []
        for index, row in zip(candidates, batch[candidates].iter_rows(), strict=True):
            trade_id = row[batch.columns.index("trade_id")]
            seen = self._seen_trades.setdefault(trade_id, set())
            if row in seen:
                drop[index] = True
            elif seen:
                conflicting.append(int(index))
            seen.add(row)
        duplicate = drop.copy()
        if not self.dropping:
            drop[:] = False
        self.counts["duplicate_rows"] += int(duplicate.sum())
        self.counts["duplicate_rows_dropped"] += int(drop.sum())
        self.counts["conflicting_trade_ids"] += len(conflicting)
        kept_before = np.cumsum(~drop) - (~drop)
        indexed = batch.with_columns(pl.Series("row", kept_before + self.rows, pl.Int64))
        if duplicate.any():
            dups = indexed.filter(pl.Series(duplicate)).with_columns(pl.lit(self.dropping).alias("dropped"))
            self._sample(DUPLICATE, dups.select([c for c in dups.columns if c in SAMPLE_SCHEMA]))
        if conflicting:
            kept = indexed[conflicting].with_columns(pl.lit(False).alias("dropped"))
            self._sample(CONFLICTING_TRADE_ID, kept.select([c for c in kept.columns if c in SAMPLE_SCHEMA]))
        return batch.filter(pl.Series(~drop))

    def _times(self, batch: pl.DataFrame, chunks: list[dict[str, np.ndarray]]) -> None:
        end = self.start + NS_PER_DAY
        absent = np.zeros(0, dtype=np.int64)
        has_sequence, has_origin = "sequence_number" in batch.columns, "origin_time" in batch.columns
        bounds = [
            _time_bounds(
                chunk["received_time"],
                chunk["sequence_number"] if has_sequence else absent,
                chunk["origin_time"] if has_origin else absent,
                self.start,
                end,
            )
            for chunk in chunks
        ]
        lo, hi = min(b[0] for b in bounds), max(b[1] for b in bounds)
        s_lo, s_hi = min(b[2] for b in bounds), max(b[3] for b in bounds)
        received_outside, origin_outside = sum(b[4] for b in bounds), sum(b[5] for b in bounds)
        self._first_received = lo if self._first_received is None else min(self._first_received, lo)
        self._last_received = hi if self._last_received is None else max(self._last_received, hi)
        if has_sequence:
            self._min_sequence = s_lo if self._min_sequence is None else min(self._min_sequence, s_lo)
            self._max_seq_value = s_hi if self._max_seq_value is None else max(self._max_seq_value, s_hi)
        self.counts["rows_outside_day"] += received_outside
        if not origin_outside:  # also capture-only tables (REST depth snapshots), which have no origin_time
            return
        origin = pl.col("origin_time")
        minutes = (
            pl.when(origin < self.start)
            .then(-((self.start - origin + NS_PER_MINUTE - 1) // NS_PER_MINUTE))
            .otherwise((origin - end) // NS_PER_MINUTE + 1)
        )
        outside = batch.filter((origin < self.start) | (origin >= end))
        self._outside.append(
            outside.group_by(minutes.alias("minutes_outside_day")).agg(pl.len().cast(pl.Int64).alias("rows"))
        )

    def _skew(self, batch: pl.DataFrame, chunks: list[dict[str, np.ndarray]], offset: int) -> None:
        keyed = self.table in MESSAGE_TABLES
        first_new = True
        if keyed and self._last_key is not None:
            first_new = (int(batch["received_time"][0]), int(batch["sequence_number"][0])) != self._last_key
        worst = self._skew_pass.add(
            [c["received_time"] for c in chunks],
            [c["origin_time"] for c in chunks],
            [c["sequence_number"] for c in chunks] if keyed else None,
            first_new,
        )
        if keyed:
            self._last_key = (int(batch["received_time"][-1]), int(batch["sequence_number"][-1]))
        if not len(worst):  # no message starts in the batch
            return
        keep = ["received_time", "origin_time"] + (["sequence_number"] if "sequence_number" in batch.columns else [])
        frame = batch.select(keep)[worst].with_columns(pl.Series("row", worst + offset, pl.Int64))
        frame = frame.with_columns((pl.col("received_time") - pl.col("origin_time")).alias("skew_ns"))
        self._sample(SKEW, frame, worst_by="skew_ns")

    def _gaps(self, batch: pl.DataFrame, chunks: list[dict[str, np.ndarray]]) -> None:
        """Sequence jumps (contiguous numbering) and out-of-order messages, as `sequence.gap_events`."""
        # Batches are message-aligned, so a batch's first row starts a message.
        lead_received = lead_sequence = np.zeros(0, dtype=np.int64)
        found, base = [], 0
        for chunk in chunks:
            received, sequence = chunk["received_time"], chunk["sequence_number"]
            rows, previous, top = gap_rows(
                received,
                sequence,
                self.contiguous,
                self._max_sequence or 0,
                self._max_sequence is not None,
                lead_received,
                lead_sequence,
            )
            self._max_sequence = int(top)
            if len(rows):
                found.append((rows + base, previous))
            lead_received, lead_sequence, base = received[-1:], sequence[-1:], base + len(received)
        if found:
            rows, previous = np.concatenate([f[0] for f in found]), np.concatenate([f[1] for f in found])
            msgs = batch.select("received_time", "origin_time", "sequence_number")[rows]
            msgs = msgs.with_columns(pl.Series("previous_sequence_number", previous, pl.Int64))
            self._events.append(gap_messages(msgs, self.contiguous).select(list(EVENT_SCHEMA)).cast(EVENT_SCHEMA))

    def _trade_order(self, batch: pl.DataFrame, offset: int) -> None:
        """Trades received before an earlier trade, and integer trade ids below an earlier one."""
        received = batch["received_time"].to_numpy()
        running = np.maximum.accumulate(received)
        previous = np.r_[self._max_received if self._max_received is not None else np.iinfo(np.int64).min, running[:-1]]
        if self._max_received is not None:
            previous = np.maximum(previous, self._max_received)
        late = np.flatnonzero(received < previous)
        self._max_received = (
            int(running[-1]) if self._max_received is None else max(self._max_received, int(running[-1]))
        )
        self.counts["out_of_order_received"] += len(late)
        if len(late):
            frame = batch[late].with_columns(
                pl.Series("row", late + offset, pl.Int64), pl.Series("previous", previous[late], pl.Int64)
            )
            self._sample(OUT_OF_ORDER_RECEIVED, frame.select([c for c in frame.columns if c in SAMPLE_SCHEMA]))
        if not self._numeric_ids:
            return
        ids = batch["trade_id"].cast(pl.Int64, strict=False)
        if ids.null_count():
            self._numeric_ids = False
            return
        values = ids.to_numpy()
        running_ids = np.maximum.accumulate(values)
        prev_ids = np.r_[
            self._max_trade_id if self._max_trade_id is not None else np.iinfo(np.int64).min, running_ids[:-1]
        ]
        if self._max_trade_id is not None:
            prev_ids = np.maximum(prev_ids, self._max_trade_id)
        back = np.flatnonzero(values < prev_ids)
        top = int(running_ids[-1])
        self._max_trade_id = top if self._max_trade_id is None else max(self._max_trade_id, top)
        self.counts["out_of_order_trade_ids"] += len(back)
        if len(back):
            frame = batch[back].with_columns(
                pl.Series("row", back + offset, pl.Int64), pl.Series("previous", prev_ids[back], pl.Int64)
            )
            self._sample(OUT_OF_ORDER_TRADE_ID, frame.select([c for c in frame.columns if c in SAMPLE_SCHEMA]))

    def _precision_batch(self, batch: pl.DataFrame, chunks: list[dict[str, np.ndarray]], offset: int) -> None:
        columns = PRECISION_COLUMNS.get(self.table, {})
        if "price" in columns and self.table != "book":
            # Prices recur all day: spell only the values no earlier batch had.
            found = max_decimals(self._seen_prices.add(batch["price"]))
            if found is not None:
                self._decimals = found if self._decimals is None else max(self._decimals, found)
        keep = [c for c in ("received_time", "sequence_number", "trade_id") if c in batch.columns]
        for column, grid in columns.items():
            step = self.tick_size if grid == "price" else self.lot_size
            per_chunk = [grid_flags(chunk[column], step) for chunk in chunks]
            off_grid, loss = (np.concatenate([f[i] for f in per_chunk]) for i in (0, 1))
            counts = self._precision[column]
            n_off, n_loss = int(off_grid.sum()), int(loss.sum())
            counts[0] += n_off
            counts[1] += n_loss
            for kind, flags, n in ((OFF_GRID, off_grid, n_off), (PRECISION_LOSS, loss, n_loss)):
                kept = self._samples.get(kind)
                if not n or (kept is not None and kept.height >= SAMPLE_ROWS):
                    continue
                bad = np.flatnonzero(flags)[:SAMPLE_ROWS]
                values = batch[column].gather(bad).to_numpy()
                self._sample(
                    kind,
                    batch.select(keep)[bad].with_columns(
                        pl.Series("row", bad + offset, pl.Int64),
                        pl.lit(column).alias("column"),
                        pl.Series("value", values, pl.Float64),
                        pl.Series("steps", values / float(step), pl.Float64),
                    ),
                )

    # ------------------------------------------------------------------ result

    def finish(self, data_bytes: int) -> DayStats:
        skews = self._skew_pass
        hourly = skews.hourly(HOURLY_SCHEMA)
        histogram = skews.histogram_frame(HISTOGRAM_SCHEMA)
        self.counts["messages"] = int(skews.messages.sum())
        self.counts["skew_negative"] = int(skews.negative.sum())
        seen = skews.messages > 0
        outside = (
            pl.concat(self._outside)
            .group_by("minutes_outside_day")
            .agg(pl.col("rows").sum())
            .sort("minutes_outside_day")
            .cast(OUTSIDE_SCHEMA)
            if self._outside
            else _empty(OUTSIDE_SCHEMA)
        )
        precision = pl.DataFrame(
            [
                {"column": c, "grid": g, "off_grid": self._precision[c][0], "precision_loss": self._precision[c][1]}
                for c, g in PRECISION_COLUMNS.get(self.table, {}).items()
            ],
            schema=PRECISION_SCHEMA,
        )
        samples = (
            pl.concat([self._samples[k] for k in sorted(self._samples)]) if self._samples else _empty(SAMPLE_SCHEMA)
        )
        gaps = pl.concat(self._events) if self._events else _empty(EVENT_SCHEMA)
        summary: dict[str, object] = {
            "version": STATS_VERSION,
            "table": self.table,
            "dt": self.day.isoformat(),
            "rows": self.rows,
            "data_bytes": data_bytes,
            "contiguous": self.contiguous,
            "duplicate_rule": DUPLICATE_RULES.get(self.table),
            **self.counts,
            "out_of_order_trade_ids": self.counts["out_of_order_trade_ids"] if self._numeric_ids else None,
            "sequence_jumps": int((gaps["kind"] == JUMP).sum()),
            "out_of_order_messages": int((gaps["kind"] == OUT_OF_ORDER).sum()),
            "missing_sequence_numbers": int(gaps["missing_sequence_numbers"].sum()),
            "first_received_time": self._first_received,
            "last_received_time": self._last_received,
            "first_sequence": self._min_sequence,
            "last_sequence": self._max_seq_value,
            "skew_min_ns": int(skews.low[seen].min()) if seen.any() else None,
            "skew_max_ns": int(skews.high[seen].max()) if seen.any() else None,
            "price_decimals_max": self._decimals,
            "off_grid_values": int(precision["off_grid"].sum()),
            "precision_loss_events": int(precision["precision_loss"].sum()),
        }
        return DayStats(summary, hourly, histogram, precision, samples, gaps, outside)


def compute_day_stats(
    data_file: Path, table: str, day: dt.date, tick_size: Decimal, lot_size: Decimal, *, contiguous: bool
) -> DayStats:
    """The statistics of a lake file computed from the file itself, in row batches (when the import's
    are missing or stale). Quarantine counts are unknown here and read as 0."""
    from market_pipeline.core.lake.ingest import batch_rows_for, iter_tables, message_aligned

    reader = parquet_io.open_file(data_file)
    batch_rows = batch_rows_for(len(reader.schema_arrow.names))

    def frames() -> Iterator[pl.DataFrame]:
        for batch in iter_tables(reader, None, batch_rows):
            frame = pl.from_arrow(batch)
            assert isinstance(frame, pl.DataFrame)
            yield frame

    repeated = None
    if table == "trades":
        repeated = repeated_hashes([trade_id_hashes(f["trade_id"]) for f in frames()])
    builder = DayStatsBuilder(table, day, tick_size, lot_size, contiguous=contiguous, repeated_trade_ids=repeated)
    builder.dropping = False
    for frame in message_aligned(frames()) if table in MESSAGE_TABLES else frames():
        builder.add(frame)
    stats = builder.finish(data_file.stat().st_size)
    stats.summary["rows"] = reader.metadata.num_rows
    return stats

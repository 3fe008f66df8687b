"""The day statistics of a raw table, gathered in the import's single pass over the day.

The raw import (core/lake/ingest.py, defs/common/importer.py) reads every row of an
instrument-day once, in bounded batches. `DayStatsBuilder` rides along that pass and keeps only
small figures (`day_stats.DayStats`); `compute_day_stats` makes the same from a lake file when the
import's statistics are missing or stale. The duplicate rows it drops: `duplicate_rows.py`.
"""

from __future__ import annotations

import datetime as dt
import threading
from decimal import Decimal
from pathlib import Path

import numpy as np
import polars as pl
from numba import njit

from market_pipeline.core.day_clock import NS_PER_DAY, NS_PER_MINUTE, day_start_ns
from market_pipeline.core.lake import parquet_io
from market_pipeline.core.lake.batches import MESSAGE_TABLES, column_chunks, iter_frames, message_aligned
from market_pipeline.core.lake.schemas import book_level_columns
from market_pipeline.core.quality.chain import ChainBreaks
from market_pipeline.core.quality.day_stats import (
    EVENT_SCHEMA,
    HISTOGRAM_SCHEMA,
    HOURLY_SCHEMA,
    OFF_GRID,
    OUT_OF_ORDER_RECEIVED,
    OUT_OF_ORDER_TRADE_ID,
    OUTSIDE_SCHEMA,
    PRECISION_LOSS,
    PRECISION_SCHEMA,
    SAMPLE_ROWS,
    SAMPLE_SCHEMA,
    SKEW,
    STATS_VERSION,
    DayStats,
)
from market_pipeline.core.quality.duplicate_rows import DUPLICATE_RULES, DuplicateRows, repeated_hashes, trade_id_hashes
from market_pipeline.core.quality.precision import SeenValues, grid_tally, max_decimals
from market_pipeline.core.quality.sequence import JUMP, OUT_OF_ORDER, gap_messages, gap_rows
from market_pipeline.core.quality.skew_pass import SkewPass
from market_pipeline.core.update_chain import has_chain

# Float columns on the instrument's grid: column -> "price" (tick) or "size" (lot).
PRECISION_COLUMNS: dict[str, dict[str, str]] = {
    "book_delta_v2": {"price": "price", "size": "size"},
    "trades": {"price": "price", "quantity": "size"},
    "book": {c: ("price" if c.endswith("_price") else "size") for c in book_level_columns()},
}

TIME_COLUMNS = ("received_time", "origin_time", "sequence_number")


def _numpy_chunks(batch: pl.DataFrame, names: list[str]) -> list[dict[str, np.ndarray]]:
    """The columns `names` as numpy arrays chunk by chunk, without a copy (`batches.column_chunks`)."""
    return [
        {name: chunk.to_numpy() for name, chunk in zip(names, part, strict=True)}
        for part in column_chunks(batch, names)
    ]


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

    `add(batch)` returns the rows to write (exact duplicates dropped under DUPLICATE_RULES, unless
    `dropping` is False: the statistics of a lake file as it is). For `book_delta_v2` every batch
    must end at a message boundary (batches.message_aligned), and one that does not is refused:
    the duplicate, skew and gap passes compare no row with the batch before. For `trades`, `repeated_trade_ids`
    (hashes from `duplicate_rows.repeated_hashes`) names the ids that occur more than once in the day.
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
        dropping: bool = True,
    ):
        self.table, self.day = table, day
        self.tick_size, self.lot_size = tick_size, lot_size
        self.contiguous = contiguous
        self.start = day_start_ns(day)
        self.rows = 0  # written rows so far
        self.counts = dict.fromkeys(
            (
                "quarantined_rows",
                "quarantined_outside_day",
                "rows_outside_day",
                "messages",
                "skew_negative",
                "out_of_order_received",
                "out_of_order_trade_ids",
            ),
            0,
        )
        self._last_key: tuple[int, int] | None = None  # deltas: the last batch's last (received, sequence)
        self._max_sequence: int | None = None
        self._max_received: int | None = None
        self._max_trade_id: int | None = None
        self._numeric_ids = True
        self._first_received = self._last_received = self._min_sequence = self._max_seq_value = None
        self._decimals: int | None = None
        self._seen_prices = SeenValues()
        self._skew_pass = SkewPass(self.start)
        self._has_sequence = False  # the rows measured have a sequence_number column
        self._outside: list[pl.DataFrame] = []
        self._events: list[pl.DataFrame] = []
        self._chain = ChainBreaks()
        columns = PRECISION_COLUMNS.get(table, {})
        self._precision = {c: [0, 0] for c in columns}
        self._samples: dict[str, pl.DataFrame] = {}
        self._samples_lock = threading.Lock()
        self.duplicates = DuplicateRows(table, repeated_trade_ids, dropping, self._sample)

    # ------------------------------------------------------------------ rejected rows

    def add_rejected(self, bad: pl.DataFrame) -> None:
        if bad.is_empty():
            return
        self.counts["quarantined_rows"] += bad.height
        self.counts["quarantined_outside_day"] += int(bad["_reason"].str.contains("outside").sum())

    # ------------------------------------------------------------------ good rows

    def add(self, batch: pl.DataFrame) -> pl.DataFrame:
        """The rows of `batch` to write, measured: `keep` then `measure`."""
        return self.measure(*self.keep(batch))

    def keep(self, batch: pl.DataFrame) -> tuple[pl.DataFrame, int]:
        """The rows of `batch` to write (exact duplicates dropped) and the day's row number of the
        first; `measure` then adds them to the statistics.

        The two may run on two threads, `keep` a batch ahead, each called in file order: they share
        only `counts` (each key written by one of them) and `_samples` (each kind added by one of
        them, under a lock)."""
        offset = self.rows
        if batch.is_empty():
            return batch, offset
        if self.table in MESSAGE_TABLES:
            self._check_message_aligned(batch)
        batch = self.duplicates.drop(batch, offset)
        self.rows += batch.height
        return batch, offset

    def measure(self, batch: pl.DataFrame, offset: int) -> pl.DataFrame:
        """Adds the kept rows of a batch (`keep`), whose first is the day's row `offset`, to the
        statistics; returns them."""
        if batch.is_empty():
            return batch
        read = [c for c in (*TIME_COLUMNS, *PRECISION_COLUMNS.get(self.table, {})) if c in batch.columns]
        chunks = _numpy_chunks(batch, read)
        self._times(batch, chunks)
        if "origin_time" in batch.columns:
            self._skew(batch, chunks, offset)
        if self.table == "book_delta_v2":
            self._gaps(batch, chunks)
            if has_chain(batch.columns):  # a capture's deltas
                self._chain.add(batch)
        if self.table == "trades":
            self._trade_order(batch, offset)
        self._precision_batch(batch, chunks, offset)
        return batch

    def _sampled(self, kind: str) -> int:
        """Rows of a kind kept so far."""
        kept = self._samples.get(kind)
        return 0 if kept is None else kept.height

    def _sample(self, kind: str, frame: pl.DataFrame) -> None:
        """Keep the first SAMPLE_ROWS rows of a kind."""
        if frame.is_empty():
            return
        with self._samples_lock:
            kept = self._samples.get(kind)
            if kept is not None and kept.height >= SAMPLE_ROWS:
                return
            extra = {
                name: pl.lit(None, dtype)
                for name, dtype in SAMPLE_SCHEMA.items()
                if name not in frame.columns and name != "kind"
            }
            frame = frame.with_columns(pl.lit(kind).alias("kind"), **extra).select(list(SAMPLE_SCHEMA))
            frame = frame.cast(SAMPLE_SCHEMA)
            self._samples[kind] = (frame if kept is None else pl.concat([kept, frame])).head(SAMPLE_ROWS)

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

    def _check_message_aligned(self, batch: pl.DataFrame) -> None:
        """Refuse a delta batch that starts inside the message the batch before ended in."""
        first = (int(batch["received_time"][0]), int(batch["sequence_number"][0]))
        if first == self._last_key:
            raise ValueError(f"{self.table} batch starts inside the message {first} of the batch before it")
        self._last_key = (int(batch["received_time"][-1]), int(batch["sequence_number"][-1]))

    def _skew(self, batch: pl.DataFrame, chunks: list[dict[str, np.ndarray]], offset: int) -> None:
        self._has_sequence = "sequence_number" in batch.columns
        self._skew_pass.add(
            [c["received_time"] for c in chunks],
            [c["origin_time"] for c in chunks],
            [c["sequence_number"] for c in chunks] if self._has_sequence else None,
            self.table in MESSAGE_TABLES,
            True,  # a batch starts a message (`_check_message_aligned`)
            offset,
        )

    def _worst_skews(self) -> None:
        """The SKEW samples: the day's messages of the largest |skew|, largest first."""
        worst = self._skew_pass.worst()
        if not len(worst.rows):
            return
        frame = pl.DataFrame(
            {
                "received_time": worst.received_time,
                "origin_time": worst.origin_time,
                **({"sequence_number": worst.sequence_number} if self._has_sequence else {}),
                "row": worst.rows,
                "skew_ns": worst.received_time - worst.origin_time,
            }
        )
        self._sample(SKEW, frame)

    def _gaps(self, batch: pl.DataFrame, chunks: list[dict[str, np.ndarray]]) -> None:
        """Sequence jumps (contiguous numbering) and out-of-order messages of the batch (`sequence.gap_rows`)."""
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
            room = [SAMPLE_ROWS - self._sampled(kind) for kind in (OFF_GRID, PRECISION_LOSS)]
            tally = grid_tally([chunk[column] for chunk in chunks], step, *room)
            counts = self._precision[column]
            counts[0] += tally.off_grid
            counts[1] += tally.precision_loss
            for kind, bad in ((OFF_GRID, tally.off_grid_rows), (PRECISION_LOSS, tally.precision_loss_rows)):
                if not len(bad):
                    continue
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
        self._worst_skews()
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
            else pl.DataFrame(schema=OUTSIDE_SCHEMA)
        )
        precision = pl.DataFrame(
            [
                {"column": c, "grid": g, "off_grid": self._precision[c][0], "precision_loss": self._precision[c][1]}
                for c, g in PRECISION_COLUMNS.get(self.table, {}).items()
            ],
            schema=PRECISION_SCHEMA,
        )
        samples = (
            pl.concat([self._samples[k] for k in sorted(self._samples)])
            if self._samples
            else pl.DataFrame(schema=SAMPLE_SCHEMA)
        )
        gaps = pl.concat(self._events) if self._events else pl.DataFrame(schema=EVENT_SCHEMA)
        summary: dict[str, object] = {
            "version": STATS_VERSION,
            "table": self.table,
            "dt": self.day.isoformat(),
            "rows": self.rows,
            "data_bytes": data_bytes,
            "contiguous": self.contiguous,
            "duplicate_rule": DUPLICATE_RULES.get(self.table),
            **self.counts,
            **self.duplicates.counts,
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
        return DayStats(summary, hourly, histogram, precision, samples, gaps, outside, self._chain.frame())


def compute_day_stats(
    data_file: Path, table: str, day: dt.date, tick_size: Decimal, lot_size: Decimal, *, contiguous: bool
) -> DayStats:
    """The statistics of a lake file computed from the file itself, in row batches (when the import's
    are missing or stale). Quarantine counts are unknown here and read as 0."""
    repeated = None
    if table == "trades":
        repeated = repeated_hashes([trade_id_hashes(f["trade_id"]) for f in iter_frames(data_file, ["trade_id"])])
    builder = DayStatsBuilder(
        table, day, tick_size, lot_size, contiguous=contiguous, repeated_trade_ids=repeated, dropping=False
    )
    frames = iter_frames(data_file)
    for frame in message_aligned(frames) if table in MESSAGE_TABLES else frames:
        builder.add(frame)
    stats = builder.finish(data_file.stat().st_size)
    stats.summary["rows"] = parquet_io.num_rows(data_file)
    return stats

"""Rebuild one instrument-day of order books from the raw lake, streaming in row-group batches.

Python here only moves batches: it converts floats to ticks and lots (vectorised, jitted),
hands arrays to `lake_replay.replay_lake_batch`, and writes the sampled rows with an Arrow
Parquet writer, so peak memory depends on the batch size, not on the length of the day.
"""

from __future__ import annotations

import datetime as dt
import json
import resource
import time
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from market_pipeline.book import lake_replay as lr
from market_pipeline.book.fixed_point import decimals_of, steps_to_decimal, to_steps
from market_pipeline.book.ladder import ST_BASE, ST_EVICTED, ST_OUTSIDE, new_book, set_level
from market_pipeline.lake.files import atomic_path
from market_pipeline.lake.schemas import BOOK_LEVELS

DELTA_BATCH_ROWS = 1_000_000
SNAPSHOT_BATCH_ROWS = 50_000
OUTPUT_BATCH_ROWS = 100_000
MAX_REPORTED_PRECISION_EVENTS = 100
TRIGGERS = ("snapshot", "interval", "message")


@dataclass
class Grid:
    tick_size: Decimal
    lot_size: Decimal

    @property
    def tick(self) -> float:
        return float(self.tick_size)

    @property
    def lot(self) -> float:
        return float(self.lot_size)


@dataclass
class RebuildResult:
    counters: dict[str, int]
    hourly: dict[str, list[int]]
    start_mode: str
    precision_events: int
    precision_examples: list[dict[str, object]]
    rows_in: int
    seconds: float
    peak_rss_bytes: int
    batches: int
    agreement: pa.Table  # one row per vendor snapshot: how the rebuilt book compared before repair
    checkpoint: Path
    output: Path
    extra: dict[str, object] = field(default_factory=dict)


class _Precision:
    """Counts values off the grid and keeps the first few rows for the report."""

    def __init__(self) -> None:
        self.count = 0
        self.examples: list[dict[str, object]] = []
        self._rows = np.empty(MAX_REPORTED_PRECISION_EVENTS, dtype=np.int64)

    def convert(self, values: np.ndarray, step: float, column: str, offset: int, seq: np.ndarray) -> np.ndarray:
        steps, off = to_steps(values, step, self._rows, MAX_REPORTED_PRECISION_EVENTS)
        if off:
            for r in self._rows[: min(off, MAX_REPORTED_PRECISION_EVENTS - len(self.examples))]:
                self.examples.append(
                    {"column": column, "row": int(offset + r), "sequence_number": int(seq[r]),
                     "value": float(values[r])}
                )
            self.count += off
        return steps


def _numpy(batch: pa.RecordBatch | pa.Table, name: str, dtype) -> np.ndarray:
    column = batch.column(name)
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if column.null_count:
        column = column.fill_null(np.nan if np.issubdtype(dtype, np.floating) else 0)
    return column.to_numpy(zero_copy_only=False).astype(dtype, copy=False)


def _level_matrix(batch: pa.RecordBatch, side: str, field_name: str, depth: int) -> np.ndarray:
    return np.column_stack(
        [_numpy(batch, f"{side}_{i}_{field_name}", np.float64) for i in range(depth)]
    )


def load_checkpoint(path: Path, grid: Grid) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict] | None:
    """The full-depth book saved at the end of the previous day, if it is on the same grid."""
    if not path.is_file():
        return None
    table = pq.read_table(path)
    meta = json.loads(table.schema.metadata[b"market_pipeline"])
    if Decimal(meta["tick_size"]) != grid.tick_size or Decimal(meta["lot_size"]) != grid.lot_size:
        return None
    bid, ask, st = new_book()
    sides = table.column("side_is_bid").to_numpy(zero_copy_only=False)
    ticks = table.column("price_ticks").to_numpy()
    lots = table.column("size_lots").to_numpy()
    for is_bid, tick, lot in zip(sides, ticks, lots):
        set_level(bid, ask, st, bool(is_bid), int(tick), int(lot))
    return bid, ask, st, meta


def write_checkpoint(path: Path, bid, ask, st, grid: Grid, rs: np.ndarray) -> None:
    base = st[ST_BASE]
    bid_idx = np.flatnonzero(bid)
    ask_idx = np.flatnonzero(ask)
    table = pa.table(
        {
            "side_is_bid": np.concatenate([np.ones(len(bid_idx), bool), np.zeros(len(ask_idx), bool)]),
            "price_ticks": np.concatenate([bid_idx + base, ask_idx + base]).astype(np.int64),
            "size_lots": np.concatenate([bid[bid_idx], ask[ask_idx]]).astype(np.int64),
        }
    )
    meta = {
        "tick_size": str(grid.tick_size),
        "lot_size": str(grid.lot_size),
        "last_sequence_number": int(rs[lr.R_LAST_SEQ]),
        "last_received_time": int(rs[lr.R_LAST_RECV]),
        "synced": bool(rs[lr.R_SYNCED]),
    }
    table = table.replace_schema_metadata({"market_pipeline": json.dumps(meta)})
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def output_schema(depth: int, grid: Grid) -> pa.Schema:
    price_t = pa.decimal128(18, decimals_of(grid.tick_size))
    size_t = pa.decimal128(18, decimals_of(grid.lot_size))
    fields = [
        pa.field("origin_time", pa.int64()),
        pa.field("received_time", pa.int64()),
        pa.field("sequence_number", pa.int64()),
        pa.field("synced", pa.bool_()),
        pa.field("trigger", pa.string()),
    ]
    for side in ("bid", "ask"):
        for i in range(depth):
            fields.append(pa.field(f"{side}_{i}_price", price_t))
            fields.append(pa.field(f"{side}_{i}_size", size_t))
    return pa.schema(fields)


class _Output:
    """Preallocated kernel output buffers and their conversion to Arrow batches."""

    def __init__(self, depth: int, grid: Grid, rows: int = OUTPUT_BATCH_ROWS):
        self.depth = depth
        self.grid = grid
        self.buffers = (
            np.empty(rows, np.int64),
            np.empty(rows, np.int64),
            np.empty(rows, np.int64),
            np.empty(rows, np.bool_),
            np.empty(rows, np.int8),
            np.empty((rows, depth), np.int64),
            np.empty((rows, depth), np.int64),
            np.empty((rows, depth), np.int64),
            np.empty((rows, depth), np.int64),
        )
        self.schema = output_schema(depth, grid)

    def batch(self, n: int) -> pa.RecordBatch:
        recv, orig, seq, synced, trigger, bt, bl, at, al = (b[:n] for b in self.buffers)
        columns = [
            pa.array(orig),
            pa.array(recv),
            pa.array(seq),
            pa.array(synced),
            pa.DictionaryArray.from_arrays(pa.array(trigger), pa.array(TRIGGERS)).cast(pa.string()),
        ]
        for ticks, lots in ((bt, bl), (at, al)):
            for i in range(self.depth):
                valid = ticks[:, i] >= 0
                columns.append(steps_to_decimal(ticks[:, i], self.grid.tick_size, valid))
                columns.append(steps_to_decimal(lots[:, i], self.grid.lot_size, valid))
        return pa.RecordBatch.from_arrays(columns, schema=self.schema)


def rebuild_day(
    deltas_path: Path,
    book_path: Path,
    output_path: Path,
    checkpoint_in: Path | None,
    checkpoint_out: Path,
    grid: Grid,
    day: dt.date,
    contiguous: bool,
    depth: int = BOOK_LEVELS,
    interval_ms: int = 100,
) -> RebuildResult:
    """Rebuild `day` from its raw deltas and vendor snapshots; write books and a checkpoint."""
    started = time.perf_counter()
    day_start = int(dt.datetime.combine(day, dt.time(), dt.timezone.utc).timestamp()) * 1_000_000_000
    deltas_file = pq.ParquetFile(deltas_path)
    book_file = pq.ParquetFile(book_path)
    if depth > BOOK_LEVELS:
        raise ValueError(f"book depth {depth} exceeds the vendor's {BOOK_LEVELS} snapshot levels")
    first_seq = _first_sequence(deltas_file)

    start_mode = "first_vendor_snapshot"
    synced = False
    loaded = load_checkpoint(checkpoint_in, grid) if checkpoint_in else None
    if loaded is not None:
        bid, ask, st, meta = loaded
        last = meta["last_sequence_number"]
        continuous = (first_seq == last + 1) if contiguous else (first_seq is not None and first_seq > last)
        if continuous:
            start_mode = "previous_day_checkpoint"
            synced = meta["synced"]
        else:
            loaded = None
    if loaded is None:
        bid, ask, st = new_book()
    rs = lr.new_replay_state(day_start, contiguous, interval_ms * 1_000_000, synced)
    if loaded is not None:
        rs[lr.R_LAST_SEQ] = loaded[3]["last_sequence_number"]
        rs[lr.R_HAVE_LAST] = 1
    counters = np.zeros(lr.N_COUNTERS, np.int64)
    hourly = np.zeros((24, lr.N_HOURLY), np.int64)
    out = _Output(depth, grid)
    snap_depth = BOOK_LEVELS
    work = tuple(np.empty(snap_depth, np.int64) for _ in range(4))
    precision = _Precision()
    agreement_parts: list[pa.Table] = []

    delta_iter = deltas_file.iter_batches(
        batch_size=DELTA_BATCH_ROWS,
        columns=["origin_time", "received_time", "sequence_number", "side_is_bid", "price", "size"],
    )
    snap_iter = book_file.iter_batches(batch_size=SNAPSHOT_BATCH_ROWS)
    d = _empty_deltas()
    s = _empty_snapshots(snap_depth)
    deltas_done = snaps_done = False
    need_deltas = need_snaps = True
    rows_in = 0
    batches = 0
    with atomic_path(output_path) as tmp, pq.ParquetWriter(tmp, out.schema, compression="zstd") as writer:
        while True:
            if need_deltas and not deltas_done:
                batch = next(delta_iter, None)
                if batch is None:
                    deltas_done = True
                else:
                    batches += 1
                    d = _concat(d, _convert_deltas(batch, grid, precision, rows_in))
                    rows_in += batch.num_rows
            if need_snaps and not snaps_done:
                batch = next(snap_iter, None)
                if batch is None:
                    snaps_done = True
                else:
                    s = _concat(s, _convert_snapshots(batch, grid, precision, snap_depth))
            diag = tuple(
                np.empty(len(s["recv"]), kind) for kind in (np.bool_, np.int64, np.int64, np.int64, np.bool_)
            )
            i, k, n_out = lr.replay_lake_batch(
                d["recv"], d["orig"], d["seq"], d["is_bid"], d["tick"], d["lot"],
                s["recv"], s["orig"], s["seq"], s["bt"], s["bl"], s["at"], s["al"],
                bid, ask, st, rs, counters, hourly,
                out.buffers, diag, work, depth, deltas_done, snaps_done,
            )
            if n_out:
                writer.write_batch(out.batch(n_out))
            if k:
                agreement_parts.append(_agreement(s, diag, k))
            d = _slice(d, i)
            s = _slice(s, k)
            if deltas_done and snaps_done and not len(d["recv"]) and not len(s["recv"]):
                break
            output_full = n_out == OUTPUT_BATCH_ROWS
            # The kernel stops for more snapshots first (it never runs past an unseen one),
            # otherwise for more deltas (used up, or the last message is cut by the batch end).
            need_snaps = not output_full and not len(s["recv"]) and not snaps_done
            need_deltas = not output_full and not need_snaps and not deltas_done
            if not (output_full or need_snaps or need_deltas or i or k):
                raise RuntimeError(f"book replay of {deltas_path} made no progress")  # a kernel bug
    write_checkpoint(checkpoint_out, bid, ask, st, grid, rs)
    counters[lr.C_DROPPED_OUTSIDE_WINDOW] = st[ST_OUTSIDE]
    result_counters = {name: int(counters[idx]) for idx, name in enumerate(lr.COUNTER_NAMES)}
    result_counters["levels_evicted"] = int(st[ST_EVICTED])
    return RebuildResult(
        counters=result_counters,
        hourly={name: hourly[:, idx].tolist() for idx, name in enumerate(lr.HOURLY_NAMES)},
        start_mode=start_mode,
        precision_events=precision.count,
        precision_examples=precision.examples,
        rows_in=rows_in,
        seconds=time.perf_counter() - started,
        peak_rss_bytes=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        batches=batches,
        agreement=pa.concat_tables(agreement_parts) if agreement_parts else _agreement_schema().empty_table(),
        checkpoint=checkpoint_out,
        output=output_path,
    )


def _empty_deltas() -> dict[str, np.ndarray]:
    return {
        "recv": np.empty(0, np.int64), "orig": np.empty(0, np.int64), "seq": np.empty(0, np.int64),
        "is_bid": np.empty(0, np.bool_), "tick": np.empty(0, np.int64), "lot": np.empty(0, np.int64),
    }


def _empty_snapshots(depth: int) -> dict[str, np.ndarray]:
    return {
        "recv": np.empty(0, np.int64), "orig": np.empty(0, np.int64), "seq": np.empty(0, np.int64),
        **{key: np.empty((0, depth), np.int64) for key in ("bt", "bl", "at", "al")},
    }


def _concat(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    if not len(a["recv"]):
        return b
    return {key: np.concatenate([a[key], b[key]]) for key in a}


def _slice(a: dict[str, np.ndarray], start: int) -> dict[str, np.ndarray]:
    # Copies, so a consumed batch is freed instead of pinned by a view of its tail.
    return {key: value[start:].copy() for key, value in a.items()}


def _convert_deltas(batch: pa.RecordBatch, grid: Grid, precision: _Precision, offset: int) -> dict[str, np.ndarray]:
    seq = _numpy(batch, "sequence_number", np.int64)
    return {
        "recv": _numpy(batch, "received_time", np.int64),
        "orig": _numpy(batch, "origin_time", np.int64),
        "seq": seq,
        "is_bid": _numpy(batch, "side_is_bid", np.bool_),
        "tick": precision.convert(_numpy(batch, "price", np.float64), grid.tick, "price", offset, seq),
        "lot": precision.convert(_numpy(batch, "size", np.float64), grid.lot, "size", offset, seq),
    }


def _convert_snapshots(batch: pa.RecordBatch, grid: Grid, precision: _Precision, depth: int) -> dict[str, np.ndarray]:
    seq = _numpy(batch, "sequence_number", np.int64)
    converted = {}
    for key, side, field_name, step in (
        ("bt", "bid", "price", grid.tick), ("bl", "bid", "size", grid.lot),
        ("at", "ask", "price", grid.tick), ("al", "ask", "size", grid.lot),
    ):
        matrix = _level_matrix(batch, side, field_name, depth)
        flat = precision.convert(matrix.ravel(), step, f"book.{side}_{field_name}", 0, np.repeat(seq, depth))
        converted[key] = flat.reshape(matrix.shape)
    # An absent level (null price) must read as absent on both arrays.
    converted["bl"][converted["bt"] < 0] = 0
    converted["al"][converted["at"] < 0] = 0
    return {
        "recv": _numpy(batch, "received_time", np.int64),
        "orig": _numpy(batch, "origin_time", np.int64),
        "seq": seq,
        **converted,
    }


def _agreement_schema() -> pa.Schema:
    return pa.schema(
        [
            ("received_time", pa.int64()),
            ("sequence_number", pa.int64()),
            ("matched", pa.bool_()),
            ("mid_deviation_half_ticks", pa.int64()),
            ("levels_mismatched", pa.int64()),
            ("first_mismatched_level", pa.int64()),
            ("synced_before", pa.bool_()),
        ]
    )


def _agreement(s: dict[str, np.ndarray], diag: tuple[np.ndarray, ...], k: int) -> pa.Table:
    match, mid_dev, mismatched, first, synced_before = (x[:k] for x in diag)
    return pa.table(
        [s["recv"][:k], s["seq"][:k], match, mid_dev, mismatched, first, synced_before],
        schema=_agreement_schema(),
    )


def _first_sequence(deltas_file: pq.ParquetFile) -> int | None:
    for batch in deltas_file.iter_batches(batch_size=1, columns=["sequence_number"]):
        return int(batch.column(0)[0].as_py())
    return None

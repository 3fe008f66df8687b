"""Rebuild one instrument-day of order books from the raw lake, streaming in row-group batches.

Python here only moves batches: it converts floats to ticks and lots (vectorised, jitted),
hands arrays to `delta_replay.replay_lake_batch`, and writes the sampled rows with an Arrow
Parquet writer, so peak memory depends on the batch size, not on the length of the day.

Three helper threads overlap the stages (numba and Arrow release the GIL): one reads and
converts delta batches, one snapshot batches, one encodes and writes output batches. Each
holds at most one batch ahead, so memory stays bounded.
"""

from __future__ import annotations

import datetime as dt
import json
import resource
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import numba as nb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from market_pipeline.core.book import delta_replay as lr

# The per-snapshot step of the kernel, reused for the snapshots after the day's last message.
from market_pipeline.core.book.delta_replay import Deltas, Rows, Snapshots, check_and_fill, emit_row
from market_pipeline.core.book.fixed_point import decimal_array, decimal_type, to_steps, unscaled_multiplier
from market_pipeline.core.book.ladder import ST_BASE, ST_EVICTED, ST_OUTSIDE, Book, new_book, set_level
from market_pipeline.core.lake import parquet_io
from market_pipeline.core.lake.files import atomic_path
from market_pipeline.core.lake.schemas import BOOK_LEVELS
from market_pipeline.core.quality.book_shape import SHAPE_SCHEMA, shape_rows, write_shape
from market_pipeline.core.read_ahead import prefetched
from market_pipeline.core.telemetry import progress
from market_pipeline.core.telemetry.memory import peak_rss_bytes

# Batch sizes bound peak memory (docs/architecture.md#performance); larger ones gain little.
DELTA_BATCH_ROWS = 500_000
SNAPSHOT_BATCH_ROWS = 25_000
OUTPUT_BATCH_ROWS = 50_000
AGREEMENT_ROW_GROUP_ROWS = 131_072  # ~6 MB held; a realistic day's 864,000 snapshots in 7 row groups
MAX_REPORTED_PRECISION_EVENTS = 100
TRIGGERS = ("snapshot", "interval", "message")
# Raw files are opened with pre_buffer=False: with pre-buffering, Arrow keeps every column chunk
# it has read until the file is closed, so memory grew with the day (~400 MB on 34 M deltas).
DELTA_COLUMNS = ["origin_time", "received_time", "sequence_number", "side_is_bid", "price", "size"]
# Read too when a file has it (OPTIONAL_COLUMNS of book_delta_v2): rows of full-book snapshot messages.
SNAPSHOT_FLAG_COLUMN = "is_snapshot"
DAY_NS = 86_400 * 1_000_000_000
# Books on disk (docs/data-formats.md): every int64 and decimal column DELTA_BINARY_PACKED
# (consecutive samples differ little) and not compressed further: on the bench's realistic day
# LZ4 on top shrank the file by only 5% (~250 MB a day at 100 ms) but made it 1.3x slower to
# write and 3.5x slower to read, and every later stage reads it; plain zstd level 1 costs about
# twice the CPU. Decimals are INT64 Parquet decimals (8 bytes, not 16); no dictionary pages but
# for `trigger` (prices change too often for them to pay); min/max statistics only on the columns
# people filter on.
OUTPUT_COMPRESSION = "none"
OUTPUT_STATISTICS = ["origin_time", "received_time", "sequence_number"]


def books_writer_options(schema: pa.Schema) -> dict[str, object]:
    """The Parquet writer options of a books file with `schema`, whichever rebuild writes it."""
    delta_encoded = [f.name for f in schema if pa.types.is_int64(f.type) or pa.types.is_decimal(f.type)]
    return {
        "compression": OUTPUT_COMPRESSION,
        "use_dictionary": ["trigger"],
        "column_encoding": dict.fromkeys(delta_encoded, "DELTA_BINARY_PACKED"),
        "write_statistics": OUTPUT_STATISTICS,
        "store_decimal_as_integer": True,
    }


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
    checkpoint: Path
    output: Path
    # `seconds` and `cpu_seconds` per stage, `process_cpu_seconds` in all
    # (docs/architecture.md#performance). The stages run on separate threads, so their wall
    # times add up to more than the rebuild's; `wait_*` is the main thread blocked on a helper.
    extra: dict[str, object] = field(default_factory=dict)


class _Timings:
    """Wall and CPU seconds per stage; each stage is only ever timed from one thread.

    CPU time (of the timing thread) shows the work itself when other processes share the cores.
    """

    def __init__(self) -> None:
        self.wall: dict[str, float] = defaultdict(float)
        self.cpu: dict[str, float] = defaultdict(float)

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        wall, cpu = time.perf_counter(), time.thread_time()
        try:
            yield
        finally:
            self.wall[stage] += time.perf_counter() - wall
            self.cpu[stage] += time.thread_time() - cpu

    def report(self) -> dict[str, dict[str, float]]:
        return {
            "seconds": {stage: round(sec, 4) for stage, sec in sorted(self.wall.items())},
            "cpu_seconds": {stage: round(sec, 4) for stage, sec in sorted(self.cpu.items())},
        }


class PrecisionCounter:
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
                    {
                        "column": column,
                        "row": int(offset + r),
                        "sequence_number": int(seq[r]),
                        "value": float(values[r]),
                    }
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


def load_checkpoint(path: Path, grid: Grid) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict] | None:
    """The full-depth book saved at the end of the previous day, if it is on the same grid."""
    if not path.is_file():
        return None
    table = parquet_io.read_table(path)
    meta = json.loads(table.schema.metadata[b"market_pipeline"])
    if Decimal(meta["tick_size"]) != grid.tick_size or Decimal(meta["lot_size"]) != grid.lot_size:
        return None
    bid, ask, st = new_book()
    sides = table.column("side_is_bid").to_numpy(zero_copy_only=False)
    ticks = table.column("price_ticks").to_numpy()
    lots = table.column("size_lots").to_numpy()
    for is_bid, tick, lot in zip(sides, ticks, lots, strict=True):
        set_level(bid, ask, st, bool(is_bid), int(tick), int(lot))
    return bid, ask, st, meta


def write_checkpoint(path: Path, bid, ask, st, grid: Grid, state: np.ndarray) -> None:
    """The full-depth book and the replay's position (`state`: a `delta_replay.REPLAY_STATE` record)."""
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
        "last_sequence_number": int(state[0]["last_seq"]),
        "last_received_time": int(state[0]["last_recv"]),
        "synced": bool(state[0]["synced"]),
    }
    table = table.replace_schema_metadata({"market_pipeline": json.dumps(meta)})
    with atomic_path(path) as tmp:
        parquet_io.write_table(table, tmp)


def output_schema(depth: int, grid: Grid) -> pa.Schema:
    """The Arrow schema of the books files; decimals are decimal64 (the unscaled value as an int64)."""
    price_t = decimal_type(grid.tick_size)
    size_t = decimal_type(grid.lot_size)
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


class BookWriter:
    """Kernel output buffers, handed to Arrow without a copy as each batch fills up.

    Level buffers are column-major (a level's ticks or lots for consecutive rows are
    contiguous), so every output column wraps a buffer row; the kernel writes through transposed
    views. Two buffer sets alternate: the kernel fills one while the other's batch is built and
    written, so the caller must have finished writing a batch before asking for the next one.
    Reusing the sets (instead of fresh arrays per batch) spares the page faults of new memory.
    Building a batch also collects the shape rows of its vendor-snapshot rows (`shape()`).
    """

    def __init__(self, depth: int, grid: Grid, day_start: int, rows: int = OUTPUT_BATCH_ROWS):
        self.depth = depth
        self.grid = grid
        self.day_start = day_start
        self._shape: list[pa.Table] = []
        self.capacity = rows
        self.schema = output_schema(depth, grid)
        self.multipliers = (unscaled_multiplier(grid.tick_size), unscaled_multiplier(grid.lot_size))
        self.triggers = pa.array(TRIGGERS)
        self._sets = [self._allocate(), self._allocate()]
        self.levels, self.buffers = self._sets[0]

    def _allocate(self) -> tuple[np.ndarray, Rows]:
        rows = self.capacity
        # levels[0..3] = bid ticks, bid lots, ask ticks, ask lots; levels[j, i] is level i's column.
        levels = np.empty((4, self.depth, rows), np.int64)
        buffers = Rows(
            np.empty(rows, np.int64),
            np.empty(rows, np.int64),
            np.empty(rows, np.int64),
            np.empty(rows, np.bool_),
            np.empty(rows, np.int8),
            *(levels[j].T for j in range(4)),  # (rows, depth) views, as the kernel indexes them
        )
        return levels, buffers

    def batch(self, n: int) -> pa.RecordBatch:
        """The first `n` rows as an Arrow batch over the buffers; the kernel gets the other set."""
        return self.detach(n)()

    def detach(self, n: int) -> Callable[[], pa.RecordBatch]:
        """Hand the kernel the other buffer set now, and return the call that builds the Arrow
        batch of the first `n` rows of this one (collecting their shape rows), so that the writer
        thread can build it. It must have run before the kernel gets this set back."""
        levels, buffers = self.levels, self.buffers
        self._sets.reverse()
        self.levels, self.buffers = self._sets[0]
        return lambda: self._build(levels, buffers, n)

    def _build(self, levels: np.ndarray, b: Rows, n: int) -> pa.RecordBatch:
        self._collect_shape(levels, b, n)
        recv, orig, seq, synced, trigger = (x[:n] for x in (b.recv, b.orig, b.seq, b.synced, b.trigger))
        columns = [
            pa.array(orig),
            pa.array(recv),
            pa.array(seq),
            pa.array(synced),
            pa.DictionaryArray.from_arrays(pa.array(trigger), self.triggers).cast(pa.string()),
        ]
        price_mult, size_mult = self.multipliers
        for ticks, lots in ((levels[0], levels[1]), (levels[2], levels[3])):
            for i in range(self.depth):
                price, size = ticks[i, :n], lots[i, :n]
                valid = price >= 0  # an absent level has tick -1: null price and size
                # Steps times the multiplier are the unscaled decimal (in place: the kernel is
                # done with these rows).
                if price_mult != 1:
                    np.multiply(price, price_mult, out=price)
                if size_mult != 1:
                    np.multiply(size, size_mult, out=size)
                columns.append(decimal_array(price, self.grid.tick_size, valid))
                columns.append(decimal_array(size, self.grid.lot_size, valid))
        return pa.RecordBatch.from_arrays(columns, schema=self.schema)

    def _collect_shape(self, levels: np.ndarray, b: Rows, n: int) -> None:
        """The shape rows (`book_shape`) of the first `n` rows' vendor-snapshot rows with both touch
        prices, read in place from the buffers' ticks and lots (an absent level has tick -1, and a
        level's size is null exactly when its price is)."""
        bid_ticks, bid_lots, ask_ticks, ask_lots = (levels[j][:, :n] for j in range(4))  # (depth, n)
        bid_valid, ask_valid = bid_ticks >= 0, ask_ticks >= 0
        rows = np.flatnonzero((b.trigger[:n] == lr.TRIGGER_SNAPSHOT) & bid_valid[0] & ask_valid[0])
        if len(rows):
            sides = (bid_ticks, bid_valid, bid_lots, bid_valid, ask_ticks, ask_valid, ask_lots, ask_valid)
            self._shape.append(shape_rows(rows, b.recv, sides, self.day_start))

    def shape(self) -> pa.Table:
        """The shape rows of every batch so far, in order."""
        return pa.concat_tables(self._shape) if self._shape else SHAPE_SCHEMA.empty_table()


class _BackgroundWriter:
    """Writes batches on its own thread with at most one in flight, so encoding overlaps the replay."""

    def __init__(self, writer: pq.ParquetWriter, pool: ThreadPoolExecutor, timings: _Timings):
        self.writer = writer
        self.pool = pool
        self.timings = timings
        self.pending: Future[None] | None = None

    def _write(self, build: Callable[[], pa.RecordBatch]) -> None:
        with self.timings("decimal"):
            batch = build()
        with self.timings("write"):
            self.writer.write_batch(batch)

    def write(self, build: Callable[[], pa.RecordBatch]) -> None:
        """Build (`BookWriter.detach`) and write a batch on the writer thread."""
        self.wait()
        self.pending = self.pool.submit(self._write, build)

    def wait(self) -> None:
        if self.pending is not None:
            with self.timings("wait_write"):
                self.pending.result()
            self.pending = None


@nb.njit(cache=True, nogil=True)
def _replay_tail(snaps, book, state, counters, hourly, rows, agreement, work, depth, snaps_final):
    """After the day's last message: the remaining vendor snapshots and the interval samples
    between and after them, in time order, up to the end of the day (day start + 24 h).

    Returns (snapshots consumed, rows out). Stops when the output is full, and (unless
    `snaps_final`) when the snapshots run out, since the next one may be due before a sample.
    """
    r = state[0]
    n_s = snaps.recv.shape[0]
    capacity = rows.recv.shape[0]
    interval = r.interval
    last_sample = r.day_start + DAY_NS
    k = 0
    n_out = 0
    while True:
        if k < n_s:
            until = snaps.recv[k]
        elif snaps_final:
            until = last_sample + 1
        else:
            return k, n_out
        while interval > 0 and r.next_sample < until and r.next_sample <= last_sample:
            if n_out >= capacity:
                return k, n_out
            emit_row(book, state, counters, rows, n_out, r.next_sample, r.last_orig, lr.TRIGGER_INTERVAL, depth)
            n_out += 1
            r.next_sample += interval
        if k >= n_s or n_out >= capacity:
            return k, n_out
        check_and_fill(book, state, counters, hourly, snaps, k, agreement, work)
        emit_row(book, state, counters, rows, n_out, snaps.recv[k], snaps.orig[k], lr.TRIGGER_SNAPSHOT, depth)
        n_out += 1
        k += 1


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
    shape_path: Path | None = None,
    agreement_path: Path | None = None,
) -> RebuildResult:
    """Rebuild `day` from its raw deltas and vendor snapshots; write books and a checkpoint, at
    `shape_path` the books' shape rows (`book_shape.write_shape`), and at `agreement_path` one
    row per vendor snapshot: how the rebuilt book compared with it before the repair (streamed
    as the snapshots are checked, so it is never held whole).

    With an interval, sample rows run from the first grid time after midnight to midnight at
    the end of the day, also after the day's last message.
    """
    started, cpu_started = time.perf_counter(), _process_cpu()
    timings = _Timings()
    day_start = int(dt.datetime.combine(day, dt.time(), dt.UTC).timestamp()) * 1_000_000_000
    deltas_file = parquet_io.open_file(deltas_path, pre_buffer=False)
    book_file = parquet_io.open_file(book_path, pre_buffer=False)
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
    book = Book(bid, ask, st)
    state = lr.new_replay_state(day_start, contiguous, interval_ms * 1_000_000, synced)
    if loaded is not None:
        state[0]["last_seq"] = loaded[3]["last_sequence_number"]
        state[0]["have_last"] = True
    counters = lr.new_counters()
    hourly = lr.new_hourly()
    out = BookWriter(depth, grid, day_start)
    snap_depth = BOOK_LEVELS
    work = lr.new_levels(snap_depth)
    delta_columns = DELTA_COLUMNS + [c for c in (SNAPSHOT_FLAG_COLUMN,) if c in deltas_file.schema_arrow.names]
    # One per reader thread (no shared state); delta examples come first in the report.
    delta_precision, snap_precision = PrecisionCounter(), PrecisionCounter()

    d = _empty_deltas()
    s = _empty_snapshots(snap_depth)
    deltas_done = snaps_done = False
    need_deltas = need_snaps = True
    rows_in = 0
    batches = 0
    idle = 0
    with ExitStack() as stack:
        pool = {
            name: stack.enter_context(ThreadPoolExecutor(1, f"book-{name}"))
            for name in ("deltas", "snapshots", "write")
        }
        delta_batches = prefetched(
            _delta_batches(deltas_file, grid, delta_precision, timings, delta_columns), pool["deltas"]
        )
        snap_batches = prefetched(
            _snapshot_batches(book_file, grid, snap_precision, snap_depth, timings), pool["snapshots"]
        )
        tmp = stack.enter_context(atomic_path(output_path))
        writer = stack.enter_context(parquet_io.parquet_writer(tmp, out.schema, **books_writer_options(out.schema)))
        background = _BackgroundWriter(writer, pool["write"], timings)
        stack.callback(background.wait)  # runs before the writer closes, also on error
        agreement = None
        if agreement_path is not None:
            agreement_tmp = stack.enter_context(atomic_path(agreement_path))
            agreement = _AgreementWriter(
                stack.enter_context(parquet_io.parquet_writer(agreement_tmp, _agreement_schema()))
            )
            stack.callback(agreement.flush)  # runs before the writer closes
        while True:
            fetched = False
            if need_deltas and not deltas_done:
                with timings("wait_deltas"):
                    batch = next(delta_batches, None)
                if batch is None:
                    deltas_done = True
                else:
                    batches += 1
                    rows_in += len(batch["recv"])
                    d = _concat(d, batch)
                    fetched = True
            if need_snaps and not snaps_done:
                with timings("wait_snapshots"):
                    batch = next(snap_batches, None)
                if batch is None:
                    snaps_done = True
                else:
                    s = _concat(s, batch)
                    fetched = True
            need_deltas = need_snaps = False
            diag = lr.new_agreement(len(s["recv"]))
            finished = False
            i = k = n_out = 0
            if deltas_done and not len(d["recv"]):
                # After the last message: the remaining snapshots, and samples to the end of the day.
                with timings("kernel"):
                    k, n_out = _replay_tail(
                        _snapshots(s), book, state, counters, hourly, out.buffers, diag, work, depth, snaps_done
                    )
                full = n_out == out.capacity
                need_snaps = not full and k == len(s["recv"]) and not snaps_done
                finished = not full and k == len(s["recv"]) and snaps_done
            elif deltas_done and _one_message(d):
                # The day's last message, after the snapshots due before it (all of them read).
                due = _leading_below(s["seq"], d["seq"][0])
                if due == len(s["recv"]) and not snaps_done:
                    need_snaps = True
                else:
                    with timings("kernel"):
                        i, k, n_out = _replay(
                            d, _head(s, due), book, state, counters, hourly, out, diag, work, depth, True, True
                        )
            else:
                # Never `deltas_final` here: a message cut by the batch end waits for its other
                # rows, and the day's last message for the branch above.
                with timings("kernel"):
                    i, k, n_out = _replay(
                        d, s, book, state, counters, hourly, out, diag, work, depth, False, snaps_done
                    )
                full = n_out == out.capacity
                # The kernel stops for more snapshots first (it never runs past an unseen one),
                # otherwise for more deltas (used up, or the last message is cut by the batch end).
                need_snaps = not full and k == len(s["recv"]) and not snaps_done
                need_deltas = not full and not need_snaps
            if n_out:
                background.wait()  # the kernel is about to reuse the buffers of the batch in flight
                background.write(out.detach(n_out))
            if k and agreement is not None:
                agreement.add(_agreement(s, diag, k))
            d = _tail(d, i)
            s = _tail(s, k)
            if finished:
                break
            # Two rounds in a row without input, output or progress would loop forever.
            idle = 0 if (fetched or i or k or n_out) else idle + 1
            if idle > 1:
                raise RuntimeError(f"book replay of {deltas_path} made no progress")  # a kernel bug
    if shape_path is not None:
        with timings("shape"):
            write_shape(out.shape(), shape_path, output_path)
    with timings("checkpoint"):
        write_checkpoint(checkpoint_out, bid, ask, st, grid, state)
    counters[0]["updates_outside_window"] = st[ST_OUTSIDE]
    result_counters = lr.record_dict(counters)
    result_counters["levels_evicted"] = int(st[ST_EVICTED])
    examples = (delta_precision.examples + snap_precision.examples)[:MAX_REPORTED_PRECISION_EVENTS]
    return RebuildResult(
        counters=result_counters,
        hourly={name: hourly[name].tolist() for name in lr.HOURLY_NAMES},
        start_mode=start_mode,
        precision_events=delta_precision.count + snap_precision.count,
        precision_examples=examples,
        rows_in=rows_in,
        seconds=time.perf_counter() - started,
        peak_rss_bytes=peak_rss_bytes(),
        batches=batches,
        checkpoint=checkpoint_out,
        output=output_path,
        extra={**timings.report(), "process_cpu_seconds": round(_process_cpu() - cpu_started, 4)},
    )


def _process_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _snapshots(s: dict[str, np.ndarray]) -> Snapshots:
    return Snapshots(s["recv"], s["orig"], s["seq"], s["bt"], s["bl"], s["at"], s["al"])


def _replay(d, s, book, state, counters, hourly, out, diag, work, depth, deltas_final, snaps_final):
    deltas = Deltas(d["recv"], d["orig"], d["seq"], d["is_bid"], d["tick"], d["lot"], d["is_snapshot"])
    return lr.replay_lake_batch(
        deltas,
        _snapshots(s),
        book,
        state,
        counters,
        hourly,
        out.buffers,
        diag,
        work,
        depth,
        deltas_final,
        snaps_final,
    )


def _delta_batches(
    file: pq.ParquetFile, grid: Grid, precision: PrecisionCounter, timings: _Timings, columns: list[str] = DELTA_COLUMNS
) -> Iterator[dict[str, np.ndarray]]:
    rows = 0
    progress.expect(file.metadata.num_rows)
    batches = file.iter_batches(batch_size=DELTA_BATCH_ROWS, columns=columns)
    while True:
        with timings("read"):
            batch = next(batches, None)
        if batch is None:
            return
        with timings("convert"):
            converted = _convert_deltas(batch, grid, precision, rows)
        rows += batch.num_rows
        progress.advance(batch.num_rows)
        yield converted


def _snapshot_batches(
    file: pq.ParquetFile, grid: Grid, precision: PrecisionCounter, depth: int, timings: _Timings
) -> Iterator[dict[str, np.ndarray]]:
    rows = 0
    batches = file.iter_batches(batch_size=SNAPSHOT_BATCH_ROWS)
    while True:
        with timings("read_snapshots"):
            batch = next(batches, None)
        if batch is None:
            return
        with timings("convert_snapshots"):
            converted = _convert_snapshots(batch, grid, precision, depth, rows)
        rows += batch.num_rows
        yield converted


def _empty_deltas() -> dict[str, np.ndarray]:
    return {
        "recv": np.empty(0, np.int64),
        "orig": np.empty(0, np.int64),
        "seq": np.empty(0, np.int64),
        "is_bid": np.empty(0, np.bool_),
        "tick": np.empty(0, np.int64),
        "lot": np.empty(0, np.int64),
        "is_snapshot": np.empty(0, np.bool_),
    }


def _empty_snapshots(depth: int) -> dict[str, np.ndarray]:
    return {
        "recv": np.empty(0, np.int64),
        "orig": np.empty(0, np.int64),
        "seq": np.empty(0, np.int64),
        **{key: np.empty((0, depth), np.int64) for key in ("bt", "bl", "at", "al")},
    }


def _concat(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    if not len(a["recv"]):
        return b
    return {key: np.concatenate([a[key], b[key]]) for key in a}


def _tail(a: dict[str, np.ndarray], start: int) -> dict[str, np.ndarray]:
    # Views: the consumed part of a batch stays alive only until the next _concat copies the rest.
    return {key: value[start:] for key, value in a.items()} if start else a


def _head(a: dict[str, np.ndarray], stop: int) -> dict[str, np.ndarray]:
    return {key: value[:stop] for key, value in a.items()}


def _one_message(d: dict[str, np.ndarray]) -> bool:
    """Whether the rows are exactly one message (one received_time and sequence_number)."""
    if not len(d["recv"]):
        return False
    return bool((d["seq"] == d["seq"][0]).all() and (d["recv"] == d["recv"][0]).all())


def _leading_below(values: np.ndarray, limit: int) -> int:
    """How many leading values are < limit (the snapshots due before a message with seq = limit)."""
    below = values < limit
    return len(values) if below.all() else int(np.argmin(below))


def _convert_deltas(
    batch: pa.RecordBatch, grid: Grid, precision: PrecisionCounter, offset: int
) -> dict[str, np.ndarray]:
    seq = _numpy(batch, "sequence_number", np.int64)
    return {
        "recv": _numpy(batch, "received_time", np.int64),
        "orig": _numpy(batch, "origin_time", np.int64),
        "seq": seq,
        "is_bid": _numpy(batch, "side_is_bid", np.bool_),
        "tick": precision.convert(_numpy(batch, "price", np.float64), grid.tick, "price", offset, seq),
        "lot": precision.convert(_numpy(batch, "size", np.float64), grid.lot, "size", offset, seq),
        "is_snapshot": (
            _numpy(batch, SNAPSHOT_FLAG_COLUMN, np.bool_)
            if SNAPSHOT_FLAG_COLUMN in batch.schema.names
            else lr.no_snapshot_flags(batch.num_rows)
        ),
    }


def _convert_snapshots(
    batch: pa.RecordBatch, grid: Grid, precision: PrecisionCounter, depth: int, offset: int
) -> dict[str, np.ndarray]:
    seq = _numpy(batch, "sequence_number", np.int64)
    converted = {}
    for key, side, field_name, step in (
        ("bt", "bid", "price", grid.tick),
        ("bl", "bid", "size", grid.lot),
        ("at", "ask", "price", grid.tick),
        ("al", "ask", "size", grid.lot),
    ):
        matrix = np.empty((batch.num_rows, depth), np.int64)
        for level in range(depth):
            column = f"{side}_{level}_{field_name}"
            matrix[:, level] = precision.convert(_numpy(batch, column, np.float64), step, f"book.{column}", offset, seq)
        converted[key] = matrix
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
            ("mismatched_level_mask", pa.int64()),
        ]
    )


def _agreement(s: dict[str, np.ndarray], diag: lr.Agreement, k: int) -> pa.Table:
    # Copies: the table outlives this round, and must not pin whole batches.
    match, mid_dev, mismatched, first, synced_before, level_mask = (x[:k].copy() for x in diag)
    return pa.table(
        [s["recv"][:k].copy(), s["seq"][:k].copy(), match, mid_dev, mismatched, first, synced_before, level_mask],
        schema=_agreement_schema(),
    )


class _AgreementWriter:
    """The agreement rows, written as the snapshots are checked in row groups of
    AGREEMENT_ROW_GROUP_ROWS (a kernel round checks anywhere from one snapshot to thousands)."""

    def __init__(self, writer: pq.ParquetWriter) -> None:
        self.writer = writer
        self.parts: list[pa.Table] = []
        self.rows = 0

    def add(self, part: pa.Table) -> None:
        self.parts.append(part)
        self.rows += part.num_rows
        if self.rows >= AGREEMENT_ROW_GROUP_ROWS:
            self.flush()

    def flush(self) -> None:
        if self.parts:
            self.writer.write_table(pa.concat_tables(self.parts))
        self.parts, self.rows = [], 0


def _first_sequence(deltas_file: pq.ParquetFile) -> int | None:
    for batch in deltas_file.iter_batches(batch_size=1, columns=["sequence_number"]):
        return int(batch.column(0)[0].as_py())
    return None

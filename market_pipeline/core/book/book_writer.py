"""The rebuild's output: the books file format, the kernel's output buffers turned into Arrow
batches (`BookWriter`), the thread that encodes and writes them (`BackgroundWriter`), and the
agreement rows (`AgreementWriter`), one per vendor snapshot checked.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Protocol

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from market_pipeline.core.book import delta_replay as lr
from market_pipeline.core.book.delta_replay import Rows
from market_pipeline.core.book.fixed_point import Grid, decimal_array, decimal_type, unscaled_multiplier
from market_pipeline.core.book.stage_timings import StageTimings
from market_pipeline.core.reused_arrays import ReusedArrays

TRIGGERS = ("snapshot", "interval", "message")
# Books on disk (docs/data-formats.md): every int64 and decimal column DELTA_BINARY_PACKED
# (consecutive samples differ little) and not compressed further: on the bench's realistic day
# LZ4 on top shrank the file by only 5% (~250 MB a day at 100 ms) but made it 1.3x slower to
# write and 3.5x slower to read, and every later stage reads it; plain zstd level 1 costs about
# twice the CPU. Decimals are INT64 Parquet decimals (8 bytes, not 16); no dictionary pages but
# for `trigger` (prices change too often for them to pay); min/max statistics only on the columns
# people filter on.
OUTPUT_COMPRESSION = "none"
OUTPUT_STATISTICS = ["origin_time", "received_time", "sequence_number"]
HANDED_BUFFERS = 8  # snapshot-row ladders the delta pass may hold: two a batch (`ReusedArrays`)


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


class SnapshotRowsSink(Protocol):
    """Where a `BookWriter` hands the rows it writes at vendor snapshots (the book shape,
    `quality/book_shape.ShapeFile`): the book core computes nothing the quality layer owns."""

    def add(self, rows: np.ndarray, received_time: np.ndarray, sides: tuple[np.ndarray, ...], day_start: int) -> None:
        """Rows `rows` of a batch: snapshot rows with both touch prices. `sides` holds the bid
        ticks, their validity, the bid lots, their validity, then the same of the asks, each
        (levels, batch rows), read in place from the output buffers."""

    def write(self, books: Path) -> None:
        """Store what was added, once the books file `books` is complete."""


class DeltaPassSink(Protocol):
    """Where a rebuild hands the deltas it reads and the snapshot rows it writes, for the metrics'
    pass over the deltas (`quality/delta_pass_stream.DeltaPassStream`); the rebuild calls it on a
    thread of its own, in order."""

    def deltas(self, batch: dict[str, np.ndarray]) -> None:
        """The next converted delta batch of the file (`input_batches.delta_batches`)."""

    def end_of_deltas(self) -> None:
        """Every delta batch has come."""

    def snapshot_rows_only_at(self, times: np.ndarray) -> None:
        """The only received_times the rebuild can write rows at vendor snapshots at, if it knows
        them beforehand; before any batch."""

    def snapshots(self, received: np.ndarray, bid_ticks: np.ndarray, ask_ticks: np.ndarray) -> None:
        """The next rows written at vendor snapshots: received_time and (levels, rows) copies of
        their bid and ask ticks (an absent level -1)."""

    def write(self, books: Path) -> None:
        """Store what was handed, once the books file `books` is complete."""


class ThreadedDeltaPass:
    """A `DeltaPassSink` whose calls run in order on `pool`'s one thread, off the threads of the
    rebuild's reader, kernel and writer that make them; `wait` waits for them and raises the first
    error."""

    def __init__(self, sink: DeltaPassSink, pool: ThreadPoolExecutor, timings: StageTimings):
        self.sink, self.pool, self.timings = sink, pool, timings
        self.calls: list[Future[None]] = []  # appended from two threads: list.append is atomic

    def deltas(self, batch: dict[str, np.ndarray]) -> None:
        self._call(self.sink.deltas, batch)

    def end_of_deltas(self) -> None:
        self._call(self.sink.end_of_deltas)

    def snapshot_rows_only_at(self, times: np.ndarray) -> None:
        self._call(self.sink.snapshot_rows_only_at, times)

    def snapshots(self, received: np.ndarray, bid_ticks: np.ndarray, ask_ticks: np.ndarray) -> None:
        self._call(self.sink.snapshots, received, bid_ticks, ask_ticks)

    def wait(self) -> None:
        for call in self.calls:
            call.result()

    def write(self, books: Path) -> None:
        self.sink.write(books)

    def _call(self, method, *args) -> None:
        self.calls.append(self.pool.submit(self._timed, method, *args))

    def _timed(self, method, *args) -> None:
        with self.timings("delta_pass"):
            method(*args)


# Output buffer sets a BookWriter rotates through: the kernel fills one while the writer thread
# builds and writes the others' batches. With two, the replay of the bench day waited 0.8 s in
# all for the writer to finish the one batch in flight (it writes in bursts: some rounds emit many
# rows); with three (of two thirds the rows each, the same memory) 0.2-0.3 s, and the rebuild took
# 4.9-5.0 s instead of 5.1-5.3 s. A fourth gained little more.
BUFFER_SETS = 3


def snapshot_row_ladders(
    b: Rows, first: int, stop: int, depth: int, arrays: ReusedArrays | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The rows at vendor snapshots among rows `first`..`stop` of `b`, as a `DeltaPassSink` takes
    them: their received_time, and copies of their (depth, rows) bid and ask ticks (in `arrays`,
    else fresh)."""
    rows = first + np.flatnonzero(b.trigger[first:stop] == lr.TRIGGER_SNAPSHOT)
    shape = (depth, len(rows))
    # `take` copies C-ordered (an index array after a slice gives F order): the rank kernel's one
    # specialization, the metrics' pass's too. With mode "clip" (the rows are in range), which
    # writes `out` directly: "raise" buffers it.
    bids, asks = (
        np.take(
            ticks.T[:depth],
            rows,
            axis=1,
            mode="clip",
            out=np.empty(shape, np.int64) if arrays is None else arrays.empty(shape, np.int64),
        )
        for ticks in (b.bid_ticks, b.ask_ticks)
    )
    return b.recv[rows], bids, asks


class BookWriter:
    """Kernel output buffers, handed to Arrow without a copy as each batch fills up.

    Level buffers are column-major (a level's ticks or lots for consecutive rows are
    contiguous), so every output column wraps a buffer row; the kernel writes through transposed
    views. `BUFFER_SETS` sets take turns: the kernel fills one while the others' batches are built
    and written, so a batch must be written before its set comes back to the kernel
    (`BackgroundWriter.write_rows` waits for it).
    Reusing the sets (instead of fresh arrays per batch) spares the page faults of new memory.
    Building a batch also hands its vendor-snapshot rows to `snapshot_rows` and `delta_pass`, if
    given.
    """

    def __init__(
        self,
        depth: int,
        grid: Grid,
        day_start: int,
        rows: int,
        snapshot_rows: SnapshotRowsSink | None = None,
        delta_pass: DeltaPassSink | None = None,
    ):
        self.depth = depth
        self.grid = grid
        self.day_start = day_start
        self.snapshot_rows = snapshot_rows
        self.delta_pass = delta_pass
        self.capacity = rows
        self.schema = output_schema(depth, grid)
        self.multipliers = (unscaled_multiplier(grid.tick_size), unscaled_multiplier(grid.lot_size))
        self.triggers = pa.array(TRIGGERS)
        self._sets = [lr.new_rows(rows, depth) for _ in range(BUFFER_SETS)]
        self.buffers = self._sets[0]
        # The snapshot rows' ladders handed to `delta_pass`, which keeps them until it has ranked
        # the deltas before them: built on the writer thread only.
        self._handed = ReusedArrays(HANDED_BUFFERS)

    def detach(self, n: int) -> Callable[[], pa.RecordBatch]:
        """Hand the kernel the next buffer set now, and return the call that builds the Arrow
        batch of the first `n` rows of this one (handing over their snapshot rows), so that the
        writer thread can build it. It must have run before the kernel gets this set back."""
        buffers = self.buffers
        self._sets.append(self._sets.pop(0))
        self.buffers = self._sets[0]
        return lambda: self._build(buffers, n)

    def _build(self, b: Rows, n: int) -> pa.RecordBatch:
        # Bid ticks, bid lots, ask ticks, ask lots, each (levels, rows): a level's column is a
        # buffer row (`new_rows` lays them out column-major).
        levels = (b.bid_ticks.T, b.bid_lots.T, b.ask_ticks.T, b.ask_lots.T)
        if self.snapshot_rows is not None:
            self._hand_snapshot_rows(self.snapshot_rows, levels, b, n)
        if self.delta_pass is not None:
            self.delta_pass.snapshots(*snapshot_row_ladders(b, 0, n, self.depth, self._handed))
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

    def _hand_snapshot_rows(self, sink: SnapshotRowsSink, levels: tuple[np.ndarray, ...], b: Rows, n: int) -> None:
        """The first `n` rows' vendor-snapshot rows with both touch prices, with the buffers'
        ticks and lots in place (an absent level has tick -1, and a level's size is null exactly
        when its price is), before the decimal conversion scales them."""
        bid_ticks, bid_lots, ask_ticks, ask_lots = (levels[j][: self.depth, :n] for j in range(4))  # (depth, n)
        bid_valid, ask_valid = bid_ticks >= 0, ask_ticks >= 0
        rows = np.flatnonzero((b.trigger[:n] == lr.TRIGGER_SNAPSHOT) & bid_valid[0] & ask_valid[0])
        if len(rows):
            sides = (bid_ticks, bid_valid, bid_lots, bid_valid, ask_ticks, ask_valid, ask_lots, ask_valid)
            sink.add(rows, b.recv, sides, self.day_start)


class BackgroundWriter:
    """Writes batches on its own thread, so encoding overlaps the replay: at most
    `BUFFER_SETS - 1` in flight, the kernel filling the last set meanwhile."""

    def __init__(self, writer: pq.ParquetWriter, pool: ThreadPoolExecutor, timings: StageTimings):
        self.writer = writer
        self.pool = pool
        self.timings = timings
        self.pending: deque[Future[None]] = deque()

    def _write(self, build: Callable[[], pa.RecordBatch]) -> None:
        with self.timings("decimal"):
            batch = build()
        with self.timings("write"):
            self.writer.write_batch(batch)

    def write_rows(self, out: BookWriter, n: int) -> None:
        """Build and write the first `n` rows of `out`'s buffers on the writer thread, once the
        buffer set the kernel gets next (the oldest batch in flight's) is written."""
        self.wait(BUFFER_SETS - 2)
        self.pending.append(self.pool.submit(self._write, out.detach(n)))

    def wait(self, in_flight: int = 0) -> None:
        """Until at most `in_flight` batches are left to write; a write's error is raised here."""
        while len(self.pending) > in_flight:
            with self.timings("wait_write"):
                self.pending.popleft().result()


AGREEMENT_SCHEMA = pa.schema(
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


def agreement_rows(s: dict[str, np.ndarray], diag: lr.Agreement, k: int) -> pa.Table:
    """The agreement rows of the first `k` snapshots of `s` (`input_batches`), checked into `diag`."""
    # Copies: the table outlives this round, and must not pin whole batches.
    match, mid_dev, mismatched, first, synced_before, level_mask = (x[:k].copy() for x in diag)
    return pa.table(
        [s["recv"][:k].copy(), s["seq"][:k].copy(), match, mid_dev, mismatched, first, synced_before, level_mask],
        schema=AGREEMENT_SCHEMA,
    )


class AgreementWriter:
    """The agreement rows, written as the snapshots are checked in row groups of `row_group_rows`
    (a kernel round checks anywhere from one snapshot to thousands)."""

    def __init__(self, writer: pq.ParquetWriter, row_group_rows: int) -> None:
        self.writer = writer
        self.row_group_rows = row_group_rows
        self.parts: list[pa.Table] = []
        self.rows = 0

    def add(self, part: pa.Table) -> None:
        self.parts.append(part)
        self.rows += part.num_rows
        if self.rows >= self.row_group_rows:
            self.flush()

    def flush(self) -> None:
        if self.parts:
            self.writer.write_table(pa.concat_tables(self.parts))
        self.parts, self.rows = [], 0

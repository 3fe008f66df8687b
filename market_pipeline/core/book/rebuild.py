"""Rebuild one instrument-day of order books from the raw lake, streaming in row-group batches:
the driver.

Python here only moves batches: it converts floats to ticks and lots (`input_batches`, vectorised,
jitted), hands arrays to `delta_replay.replay_lake_batch`, and writes the sampled rows with an
Arrow Parquet writer (`book_writer`), so peak memory depends on the batch size, not on the length
of the day. The day starts from the previous day's checkpoint when it continues it
(`checkpoint`), and ends by writing its own.

Three helper threads overlap the stages (numba and Arrow release the GIL): one reads and
converts delta batches, one snapshot batches, one encodes and writes output batches. Each
holds at most one batch ahead, so memory stays bounded. A fourth, with a `DeltaPassSink`, hands it
the delta batches and the rows written at vendor snapshots (the metrics' pass over the deltas).
"""

from __future__ import annotations

import datetime as dt
import resource
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numba as nb
import numpy as np

from market_pipeline.core.book import delta_replay as lr
from market_pipeline.core.book.book_writer import (
    AGREEMENT_SCHEMA,
    AgreementWriter,
    BackgroundWriter,
    BookWriter,
    DeltaPassSink,
    SnapshotRowsSink,
    ThreadedDeltaPass,
    agreement_rows,
    books_writer_options,
    output_schema,
)
from market_pipeline.core.book.checkpoint import load_checkpoint, write_checkpoint
from market_pipeline.core.book.fixed_point import MAX_REPORTED_PRECISION_EVENTS, Grid, PrecisionCounter
from market_pipeline.core.book.input_batches import (
    SNAPSHOT_FLAG_COLUMN,
    as_deltas,
    as_snapshots,
    concat,
    delta_batches,
    empty_deltas,
    empty_snapshots,
    first_sequence,
    head,
    leading_below,
    message_end,
    one_message,
    snapshot_batches,
    tail,
)
from market_pipeline.core.book.ladder import ST_EVICTED, ST_OUTSIDE, Book, new_book
from market_pipeline.core.book.replay_steps import check_and_fill, emit_row
from market_pipeline.core.book.stage_timings import StageTimings
from market_pipeline.core.lake import parquet_io
from market_pipeline.core.lake.files import atomic_path
from market_pipeline.core.lake.schemas import BOOK_LEVELS
from market_pipeline.core.read_ahead import prefetched
from market_pipeline.core.telemetry.memory import peak_rss_bytes
from market_pipeline.core.update_chain import CHAIN_FIELDS, has_chain

# Batch sizes bound peak memory (docs/architecture.md#performance); larger ones gain little.
DELTA_BATCH_ROWS = 500_000
SNAPSHOT_BATCH_ROWS = 25_000
OUTPUT_BATCH_ROWS = 33_000  # rows of one output buffer set (book_writer.BUFFER_SETS of them)
AGREEMENT_ROW_GROUP_ROWS = 131_072  # ~6 MB held; a realistic day's 864,000 snapshots in 7 row groups
# Raw files are opened with pre_buffer=False: with pre-buffering, Arrow keeps every column chunk
# it has read until the file is closed, so memory grew with the day (~400 MB on 34 M deltas).
DELTA_COLUMNS = ["origin_time", "received_time", "sequence_number", "side_is_bid", "price", "size"]
DAY_NS = 86_400 * 1_000_000_000
START_CHECKPOINT = "previous_day_checkpoint"
START_SNAPSHOT = "first_vendor_snapshot"


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
    shape: SnapshotRowsSink | None = None,
    agreement_path: Path | None = None,
    delta_pass: DeltaPassSink | None = None,
) -> RebuildResult:
    """Rebuild `day` from its raw deltas and vendor snapshots; write books and a checkpoint, hand
    `shape` the books' rows at vendor snapshots and then the books file (`book_shape.ShapeFile`
    stores their shape rows), and write at `agreement_path` one row per vendor snapshot: how the
    rebuilt book compared with it before the repair (streamed as the snapshots are checked, so it
    is never held whole). `delta_pass`, if given, gets the delta batches and the rows written at
    vendor snapshots on a thread of its own, and then the books file.

    With an interval, sample rows run from the first grid time after midnight to midnight at
    the end of the day, also after the day's last message.
    """
    started, cpu_started = time.perf_counter(), _process_cpu()
    timings = StageTimings()
    day_start = int(dt.datetime.combine(day, dt.time(), dt.UTC).timestamp()) * 1_000_000_000
    deltas_file = parquet_io.open_file(deltas_path, pre_buffer=False)
    book_file = parquet_io.open_file(book_path, pre_buffer=False)
    if depth > BOOK_LEVELS:
        raise ValueError(f"book depth {depth} exceeds the vendor's {BOOK_LEVELS} snapshot levels")
    start = _start_of_day(checkpoint_in, grid, first_sequence(deltas_file), contiguous)
    state = lr.new_replay_state(day_start, contiguous, interval_ms * 1_000_000, start.synced)
    if start.last_sequence is not None:
        state[0]["last_seq"] = start.last_sequence
        state[0]["have_last"] = True
    present = deltas_file.schema_arrow.names
    delta_columns = DELTA_COLUMNS + [c for c in (SNAPSHOT_FLAG_COLUMN,) if c in present]
    delta_columns += list(CHAIN_FIELDS) if has_chain(present) else []  # a capture's: its breaks unsync the book
    # One per reader thread (no shared state); delta examples come first in the report.
    delta_precision, snap_precision = PrecisionCounter(), PrecisionCounter()

    with ExitStack() as stack:
        pool = {
            name: stack.enter_context(ThreadPoolExecutor(1, f"book-{name}"))
            for name in ("deltas", "snapshots", "write", "delta-pass")
        }
        passing = ThreadedDeltaPass(delta_pass, pool["delta-pass"], timings) if delta_pass is not None else None
        replay = _DayReplay(start.book, state, depth, timings, passing)
        out = BookWriter(depth, grid, day_start, OUTPUT_BATCH_ROWS, shape, passing)
        deltas = prefetched(
            delta_batches(deltas_file, grid, delta_precision, timings, delta_columns, DELTA_BATCH_ROWS),
            pool["deltas"],
        )
        snapshots = prefetched(
            snapshot_batches(book_file, grid, snap_precision, replay.snap_depth, timings, SNAPSHOT_BATCH_ROWS),
            pool["snapshots"],
        )
        background, agreement = _open_outputs(stack, output_path, agreement_path, depth, grid, pool["write"], timings)
        _replay_batches(replay, deltas, snapshots, out, background, agreement, deltas_path)
        if passing is not None:
            background.wait()  # every batch built: every snapshot row handed to the pass
            passing.wait()  # an error of the pass fails the rebuild before its books are in place
    if shape is not None:
        with timings("shape"):
            shape.write(output_path)
    if passing is not None:
        with timings("delta_pass_finish"):
            passing.write(output_path)
    book = start.book
    with timings("checkpoint"):
        write_checkpoint(checkpoint_out, book.bid, book.ask, book.st, grid, state)
    replay.counters[0]["updates_outside_window"] = book.st[ST_OUTSIDE]
    result_counters = lr.record_dict(replay.counters)
    result_counters["levels_evicted"] = int(book.st[ST_EVICTED])
    examples = (delta_precision.examples + snap_precision.examples)[:MAX_REPORTED_PRECISION_EVENTS]
    return RebuildResult(
        counters=result_counters,
        hourly={name: replay.hourly[name].tolist() for name in lr.HOURLY_NAMES},
        start_mode=start.mode,
        precision_events=delta_precision.count + snap_precision.count,
        precision_examples=examples,
        rows_in=replay.rows_in,
        seconds=time.perf_counter() - started,
        peak_rss_bytes=peak_rss_bytes(),
        batches=replay.batches,
        checkpoint=checkpoint_out,
        output=output_path,
        extra={**timings.report(), "process_cpu_seconds": round(_process_cpu() - cpu_started, 4)},
    )


class _Start(NamedTuple):
    book: Book
    mode: str  # START_CHECKPOINT or START_SNAPSHOT
    synced: bool
    last_sequence: int | None  # of the previous day's last message, when the day continues it


def _start_of_day(checkpoint_in: Path | None, grid: Grid, first_seq: int | None, contiguous: bool) -> _Start:
    """The previous day's book when the day's first message continues it (the next sequence
    number when contiguous, any later one otherwise), else an empty book waiting for the first
    vendor snapshot."""
    loaded = load_checkpoint(checkpoint_in, grid) if checkpoint_in else None
    if loaded is not None:
        bid, ask, st, meta = loaded
        last = meta["last_sequence_number"]
        continuous = (first_seq == last + 1) if contiguous else (first_seq is not None and first_seq > last)
        if continuous:
            return _Start(Book(bid, ask, st), START_CHECKPOINT, meta["synced"], last)
    return _Start(Book(*new_book()), START_SNAPSHOT, False, None)


def _open_outputs(
    stack: ExitStack,
    output_path: Path,
    agreement_path: Path | None,
    depth: int,
    grid: Grid,
    pool: ThreadPoolExecutor,
    timings: StageTimings,
) -> tuple[BackgroundWriter, AgreementWriter | None]:
    """The books file's writer thread and, with `agreement_path`, the agreement rows' writer; each
    written to a temporary path that `stack` moves into place when it closes without error."""
    schema = output_schema(depth, grid)
    tmp = stack.enter_context(atomic_path(output_path))
    writer = stack.enter_context(parquet_io.parquet_writer(tmp, schema, **books_writer_options(schema)))
    background = BackgroundWriter(writer, pool, timings)
    stack.callback(background.wait)  # runs before the writer closes, also on error
    if agreement_path is None:
        return background, None
    agreement_tmp = stack.enter_context(atomic_path(agreement_path))
    agreement = AgreementWriter(
        stack.enter_context(
            parquet_io.parquet_writer(
                agreement_tmp, AGREEMENT_SCHEMA, **parquet_io.delta_writer_options(AGREEMENT_SCHEMA)
            )
        ),
        AGREEMENT_ROW_GROUP_ROWS,
    )
    stack.callback(agreement.flush)  # runs before the writer closes
    return background, agreement


class _Round(NamedTuple):
    """What one kernel round consumed and wrote, and what it needs next."""

    deltas: int
    snapshots: int
    rows_out: int
    agreement: lr.Agreement
    need_deltas: bool
    need_snapshots: bool
    finished: bool


class _DayReplay:
    """The kernel's state over the day, and the input read but not consumed yet."""

    def __init__(
        self, book: Book, state: np.ndarray, depth: int, timings: StageTimings, delta_pass: DeltaPassSink | None
    ):
        self.book, self.state, self.depth, self.timings = book, state, depth, timings
        self.delta_pass = delta_pass  # handed each delta batch as it comes
        self.counters = lr.new_counters()
        self.hourly = lr.new_hourly()
        self.snap_depth = BOOK_LEVELS
        self.work = lr.new_levels(self.snap_depth)
        self.d = empty_deltas()
        # A delta batch whose first `rest_from` rows were copied to the end of `d` behind the cut
        # message they complete; the kernel takes the rest as a view once it gets there.
        self.rest: dict[str, np.ndarray] | None = None
        self.rest_from = 0
        self.s = empty_snapshots(self.snap_depth)
        self.deltas_done = self.snaps_done = False
        self.rows_in = self.batches = 0

    def fetch(self, deltas, snapshots, need_deltas: bool, need_snapshots: bool) -> bool:
        """Append the next batch of each input asked for (and not used up); whether any came."""
        fetched = False
        if need_deltas and self.rest is not None:
            self._take_rest()
            fetched = True
        elif need_deltas and not self.deltas_done:
            with self.timings("wait_deltas"):
                batch = next(deltas, None)
            if batch is None:
                self.deltas_done = True
                if self.delta_pass is not None:
                    self.delta_pass.end_of_deltas()
            else:
                if self.delta_pass is not None:
                    self.delta_pass.deltas(batch)
                self.batches += 1
                self.rows_in += len(batch["recv"])
                self._join(batch)
                fetched = True
        if need_snapshots and not self.snaps_done:
            with self.timings("wait_snapshots"):
                batch = next(snapshots, None)
            if batch is None:
                self.snaps_done = True
            else:
                self.s = concat(self.s, batch)
                fetched = True
        return fetched

    def _join(self, batch: dict[str, np.ndarray]) -> None:
        """`batch` after the rows held (a message cut by the last batch's end, usually a few rows).
        Copying the whole batch behind them (the bench day: 68 copies, 1.4 GB, on the kernel's
        thread) made the rebuild step about 0.3 s slower: only the rows that complete the cut
        message, and the next message's first row that tells the kernel it ended, are copied;
        the rest waits in `self.rest`."""
        held = self.d
        if not len(held["recv"]):
            self.d = batch
            return
        end = message_end(batch, held["recv"][-1], held["seq"][-1]) + 1
        if end >= len(batch["recv"]):
            self.d = concat(held, batch)
            return
        self.d = concat(held, head(batch, end))
        self.rest, self.rest_from = batch, end

    def _take_rest(self) -> None:
        """The held rows followed by the rest of the batch `_join` left: a view of the batch when
        the held rows are all from it (the kernel got past the cut message)."""
        held, rest, start = self.d, self.rest, self.rest_from
        assert rest is not None
        left = len(held["recv"])
        self.d = tail(rest, start - left) if left <= start else concat(held, tail(rest, start))
        self.rest = None

    def round(self, out: BookWriter) -> _Round:
        """One kernel call on the input held, into `out`'s buffers."""
        d, s = self.d, self.s
        diag = lr.new_agreement(len(s["recv"]))
        need_deltas = need_snaps = finished = False
        i = k = n_out = 0
        if self.deltas_done and not len(d["recv"]):
            # After the last message: the remaining snapshots, and samples to the end of the day.
            with self.timings("kernel"):
                k, n_out = _replay_tail(as_snapshots(s), self._target(out, diag), self.depth, self.snaps_done)
            full = n_out == out.capacity
            need_snaps = not full and k == len(s["recv"]) and not self.snaps_done
            finished = not full and k == len(s["recv"]) and self.snaps_done
        elif self.deltas_done and one_message(d):
            # The day's last message, after the snapshots due before it (all of them read).
            due = leading_below(s["seq"], d["seq"][0])
            if due == len(s["recv"]) and not self.snaps_done:
                need_snaps = True
            else:
                with self.timings("kernel"):
                    i, k, n_out = self._replay(d, head(s, due), out, diag, True, True)
        else:
            # Never `deltas_final` here: a message cut by the batch end waits for its other
            # rows, and the day's last message for the branch above.
            with self.timings("kernel"):
                i, k, n_out = self._replay(d, s, out, diag, False, self.snaps_done)
            full = n_out == out.capacity
            # The kernel stops for more snapshots first (it never runs past an unseen one),
            # otherwise for more deltas (used up, or the last message is cut by the batch end).
            need_snaps = not full and k == len(s["recv"]) and not self.snaps_done
            need_deltas = not full and not need_snaps
        return _Round(i, k, n_out, diag, need_deltas, need_snaps, finished)

    def _target(self, out: BookWriter, diag) -> lr.LakeReplay:
        """What this round's kernel works on: the day's book and records, this round's outputs."""
        return lr.LakeReplay(self.book, self.state, self.counters, self.hourly, out.buffers, diag, self.work)

    def _replay(self, d, s, out: BookWriter, diag, deltas_final: bool, snaps_final: bool):
        target = self._target(out, diag)
        return lr.replay_lake_batch(as_deltas(d), as_snapshots(s), target, self.depth, deltas_final, snaps_final)

    def consume(self, deltas: int, snapshots: int) -> None:
        self.d = tail(self.d, deltas)
        self.s = tail(self.s, snapshots)


def _replay_batches(
    replay: _DayReplay,
    deltas,
    snapshots,
    out: BookWriter,
    background: BackgroundWriter,
    agreement: AgreementWriter | None,
    deltas_path: Path,
) -> None:
    """Kernel rounds until the day is done: each reads what the last one asked for, and hands
    its rows to the writer thread and its checked snapshots to the agreement writer."""
    need_deltas = need_snaps = True
    idle = 0
    while True:
        fetched = replay.fetch(deltas, snapshots, need_deltas, need_snaps)
        done = replay.round(out)
        if done.rows_out:
            background.write_rows(out, done.rows_out)
        if done.snapshots and agreement is not None:
            agreement.add(agreement_rows(replay.s, done.agreement, done.snapshots))
        replay.consume(done.deltas, done.snapshots)
        if done.finished:
            return
        # Two rounds in a row without input, output or progress would loop forever.
        idle = 0 if (fetched or done.deltas or done.snapshots or done.rows_out) else idle + 1
        if idle > 1:
            raise RuntimeError(f"book replay of {deltas_path} made no progress")  # a kernel bug
        need_deltas, need_snaps = done.need_deltas, done.need_snapshots


def _process_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@nb.njit(cache=True, nogil=True)
def _replay_tail(snaps, replay, depth, snaps_final):
    """After the day's last message: the remaining vendor snapshots and the interval samples
    between and after them, in time order, up to the end of the day (day start + 24 h).

    Returns (snapshots consumed, rows out). Stops when the output is full, and (unless
    `snaps_final`) when the snapshots run out, since the next one may be due before a sample.
    """
    book, state, counters, hourly, rows, agreement, work = replay
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

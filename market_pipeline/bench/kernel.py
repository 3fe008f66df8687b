"""The bench's kernel figures: the production replay kernel over a day with a best bid/ask after
every message (the core), the vendor's rebuilder doing the same (the peer), and the kernel's cost
a row on a book with fewer levels than the rows hold (the thin book)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from market_pipeline.core.book import delta_replay as lr
from market_pipeline.core.book.fixed_point import to_steps
from market_pipeline.core.book.input_batches import as_snapshots, empty_snapshots
from market_pipeline.core.book.ladder import new_book
from market_pipeline.core.book.rebuild import DELTA_COLUMNS, OUTPUT_BATCH_ROWS
from market_pipeline.core.lake import parquet_io

CORE_CHUNK_ROWS = 4_000_000  # bounds the bench's own memory; the kernel runs on whole messages
KERNEL_COLUMNS = ["received_time", "sequence_number", "side_is_bid", "price", "size"]


@dataclass(frozen=True)
class CoreRun:
    deltas: int
    messages: int
    seconds: float

    @property
    def deltas_per_s(self) -> float:
        return self.deltas / self.seconds if self.seconds else 0.0


def _kernel_chunks(path: Path, tick: float, lot: float, rows: int | None) -> Iterator[tuple[np.ndarray, ...]]:
    """The deltas as int64 kernel arrays, in chunks cut only between messages; `rows` limits them."""
    off_grid = np.empty(1, np.int64)
    carry: tuple[np.ndarray, ...] | None = None
    taken = 0
    file = parquet_io.open_file(path, pre_buffer=False)  # pre-buffering would keep every chunk read
    for batch in file.iter_batches(batch_size=CORE_CHUNK_ROWS, columns=KERNEL_COLUMNS):
        if rows is not None:
            batch = batch.slice(0, rows - taken)
        taken += batch.num_rows
        # Writable copies, so every chunk has the one array type numba compiled for.
        recv, seq, is_bid, price, size = (
            batch.column(c).to_numpy(zero_copy_only=False, writable=True) for c in KERNEL_COLUMNS
        )
        chunk = (recv, seq, is_bid, to_steps(price, tick, off_grid, 1)[0], to_steps(size, lot, off_grid, 1)[0])
        if carry is not None:
            chunk = tuple(np.concatenate([a, b]) for a, b in zip(carry, chunk, strict=True))
        last_start = _last_message_start(chunk[0], chunk[1])
        carry = tuple(a[last_start:] for a in chunk)
        if last_start:
            yield tuple(a[:last_start] for a in chunk)
        if rows is not None and taken >= rows:
            break
    if carry is not None and len(carry[0]):
        yield carry


def _last_message_start(recv: np.ndarray, seq: np.ndarray) -> int:
    """Index of the first row of the last message (rows sharing received_time and sequence_number)."""
    differs = (recv[1:] != recv[:-1]) | (seq[1:] != seq[:-1])
    starts = np.flatnonzero(differs)
    return int(starts[-1]) + 1 if len(starts) else 0


class _CoreReplay:
    """The production kernel set up as the core measures it: a row (`depth` levels a side; the
    core: best bid and ask) after every message, no vendor snapshots; the state carries over from
    chunk to chunk."""

    def __init__(self, depth: int = 1) -> None:
        self.depth = depth
        self.book = new_book()
        self.state = lr.new_replay_state(0, False, 0, True)
        self.counters = lr.new_counters()
        self.hourly = lr.new_hourly()
        self.snaps = as_snapshots(empty_snapshots(1))
        self.agreement = lr.new_agreement(0)
        self.work = lr.new_levels(depth)
        self.rows = lr.new_rows(OUTPUT_BATCH_ROWS, depth)  # reused, as the rebuild reuses its buffers
        self.replay = lr.LakeReplay(
            self.book, self.state, self.counters, self.hourly, self.rows, self.agreement, self.work
        )

    def chunk(self, recv, seq, is_bid, ticks, lots) -> lr.Deltas:
        """Kernel input for a chunk of whole messages, typed as the rebuild's (input_batches.as_deltas)."""
        recv, seq = lr.read_only(recv), lr.read_only(seq)
        return lr.Deltas(recv, recv, seq, is_bid, ticks, lots, lr.no_snapshot_flags(len(recv)))

    def run(self, deltas: lr.Deltas) -> int:
        """Replay the chunk into the reused output buffers, as the rebuild does; returns its messages."""
        done = messages = 0
        while done < len(deltas.recv):
            part = lr.Deltas(*(column[done:] for column in deltas))
            i, _, n_out = lr.replay_lake_batch(
                part,
                self.snaps,
                self.replay,
                self.depth,
                True,
                True,
            )
            done += i
            messages += n_out
        return messages


def core(path: Path, tick: float, lot: float, rows: int | None = None) -> CoreRun:
    """replay_lake_batch over the deltas, best bid/ask after every message; only the kernel is timed."""
    warm = _CoreReplay()
    warm.run(warm.chunk(*next(_kernel_chunks(path, tick, lot, 10_000))))  # compile or load
    replay = _CoreReplay()
    deltas = messages = 0
    seconds = 0.0
    for chunk in _kernel_chunks(path, tick, lot, rows):
        inputs = replay.chunk(*chunk)
        started = time.perf_counter()
        messages += replay.run(inputs)
        seconds += time.perf_counter() - started
        deltas += len(chunk[0])
    return CoreRun(deltas, messages, seconds)


def peer(path: Path, rows: int) -> CoreRun:
    """The vendor's rebuilder on the first `rows` deltas, reading best bid/ask after each message."""
    import pyarrow as pa
    from lakeapi.orderbook import OrderBookUpdater

    file = parquet_io.open_file(path)
    head = pa.Table.from_batches([next(file.iter_batches(batch_size=rows, columns=DELTA_COLUMNS))]).to_pandas()
    warm = OrderBookUpdater(head.head(10_000))  # its numba code compiles on first use
    for _ in range(100):
        warm.process_next_update()
        warm.get_bests()
    updater = OrderBookUpdater(head)
    n = len(head)
    messages = 0
    started = time.perf_counter()
    while updater.current_index < n:
        updater.process_next_update()
        updater.get_bests()
        messages += 1
    return CoreRun(n, messages, time.perf_counter() - started)


THIN_BOOK_DEPTH = 20  # levels a side a row holds, as the rebuild's default
THIN_BOOK_MESSAGES = 200_000


def book_rows(levels: int, messages: int = THIN_BOOK_MESSAGES, depth: int = THIN_BOOK_DEPTH) -> CoreRun:
    """The kernel writing a `depth`-level row after each of `messages` one-row messages on a book
    of `levels` contiguous levels a side (each message resizes one of them); only the replay is
    timed. With `levels` under `depth` a row's walk must stop at the side's last level, not at
    the window's edge (millions of ticks away)."""
    n = 2 * levels + messages
    recv = np.arange(1, n + 1, dtype=np.int64)
    is_bid = np.zeros(n, dtype=np.bool_)
    ticks = np.empty(n, dtype=np.int64)
    touch = 1_000_000
    is_bid[:levels] = True
    ticks[:levels] = touch - 1 - np.arange(levels)
    ticks[levels : 2 * levels] = touch + np.arange(levels)
    updated = np.arange(messages) % (2 * levels)  # the levels in turn
    is_bid[2 * levels :] = updated < levels
    ticks[2 * levels :] = ticks[updated]
    lots = 1 + np.arange(n, dtype=np.int64) % 7
    warm = _CoreReplay(depth)
    warm.run(warm.chunk(recv[:100], recv[:100], is_bid[:100], ticks[:100], lots[:100]))  # compile or load
    replay = _CoreReplay(depth)
    inputs = replay.chunk(recv, recv, is_bid, ticks, lots)
    started = time.perf_counter()
    rows = replay.run(inputs)
    return CoreRun(n, rows, time.perf_counter() - started)

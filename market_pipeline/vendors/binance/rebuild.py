"""Books of one instrument-day rebuilt from a Binance capture in the raw lake, with the exchange's rules.

Reads the raw partitions the capture source wrote (`book_delta_v2` with `first_update_id`,
`prev_update_id` and `line_no`; `depth_snapshot`; `book_ticker`; `book` for the snapshots'
exchange time; `trades`, only counted) and replays them in capture line order with the one
Binance sync state machine, `sync_kernel.replay_capture` (spot U/u, futures pu; diffs buffered
until a REST snapshot; a broken chain is a gap; the book stays out of sync until a later snapshot
re-syncs it). bookTicker
messages are the oracle: one whose `u` is the final `u` of an applied diff must equal the best
bid and ask after it.

Rows have the vendor path's format (`book_writer.output_schema`): one at every REST snapshot line,
then one every `book.sample_interval_ms` of receive time from the day's first event (0: one after
every diff line). `synced` is true only in the LIVE state, never from a gap until the re-sync,
and `sequence_number` is the last applied `u`.

Day boundaries: a day resumes exactly where the previous day's replay stopped, from its
end-of-day checkpoint (full-depth book) and sync carry (`carry.py`: the sync record and the diffs
still buffered for a snapshot). In sync, the first diff must continue the chain (spot
`U == u + 1`, futures `pu == u`), otherwise it is counted as a gap and the day waits for a REST
snapshot. Out of sync, the day keeps waiting: a snapshot after midnight is joined by the buffered
diffs from before it (they move the book only; they are neither counted again nor written as the
day's rows), or a snapshot loaded before midnight by the day's first diffs. Without a checkpoint
the day waits for a snapshot from its start. bookTicker messages written before midnight for a
diff after it are carried in the checkpoint directory (`book_ticker_pending.parquet`) and checked
the next day, so per-day totals add up to a replay of the whole capture.

Crossed or locked books after a diff (impossible while in sync, so a sign of bad data) are
counted and resolved like the vendor path (`ladder.resolve_cross`: the side the diff touched last wins).

Fidelity: beside the day's books (`capture_fidelity_dir`) a small table holds what
`core/quality/fidelity.py` reports, so its figures are the replay's own (`fidelity_table`): the
tops of book of the in-sync rows written and of the bookTicker stream on a common grid
(`checks.fidelity_sample_interval_ms`), and in its metadata the ticker checks and mismatches,
gaps, unsynced rows and the number of capture files holding the day.

Memory: `book_delta_v2` is replayed in batches of whole messages (`delta_batches.DELTA_BATCH_ROWS`
rows), each handing the next the diffs it still buffers for a snapshot as a day hands the next
(`sync_carry.carry_out` / `resume`). The bookTickers (one a message: up to tens of millions a day
recorded) are sorted by u into scratch under `spill_dir` and each batch's replay reads the window
of them its diffs can meet (`ticker_store`); the fidelity table keeps a top per grid time. Only the
day's REST snapshots (a few) are loaded whole. The output is written in batches of
`rebuild.OUTPUT_BATCH_ROWS`.
"""

from __future__ import annotations

import datetime as dt
import itertools
import resource
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import numpy as np
import polars as pl

from market_pipeline.core.book import delta_replay as lr
from market_pipeline.core.book.book_writer import (
    BackgroundWriter,
    BookWriter,
    DeltaPassSink,
    ThreadedDeltaPass,
    books_writer_options,
    snapshot_row_ladders,
)
from market_pipeline.core.book.checkpoint import load_checkpoint, write_checkpoint
from market_pipeline.core.book.fixed_point import Grid, PrecisionCounter
from market_pipeline.core.book.ladder import (
    EMPTY,
    ST_BASE,
    ST_BEST_ASK,
    ST_BEST_BID,
    ST_EVICTED,
    ST_OUTSIDE,
    Book,
    new_book,
)
from market_pipeline.core.book.rebuild import OUTPUT_BATCH_ROWS, START_CHECKPOINT
from market_pipeline.core.book.stage_timings import StageTimings
from market_pipeline.core.lake import parquet_io
from market_pipeline.core.lake.files import atomic_path
from market_pipeline.core.lake.parquet_io import write_lake_parquet_atomic
from market_pipeline.core.quality.book_shape import ShapeFile
from market_pipeline.core.read_ahead import prefetched
from market_pipeline.vendors.binance import sync_carry as sc
from market_pipeline.vendors.binance import sync_kernel as br
from market_pipeline.vendors.binance.carry import SYNC_CARRY_FILE, read_sync_carry, write_sync_carry
from market_pipeline.vendors.binance.delta_batches import (
    BatchedReplay,
    delta_pass_columns,
    diff_arrays,
    message_groups,
    read_delta_batches,
)
from market_pipeline.vendors.binance.fidelity_table import GridTops, write_fidelity
from market_pipeline.vendors.binance.ticker_store import TICKER_COLUMNS, no_tickers, sort_tickers

NS_PER_MS = 1_000_000
PENDING_TICKERS_FILE = "book_ticker_pending.parquet"
START_SNAPSHOT = "waiting_for_snapshot"  # the lake replay starts at its first vendor snapshot instead
START_CARRIED = "previous_day_out_of_sync"  # resumes the previous day's buffer or loaded snapshot


# --- Python side -------------------------------------------------------------------------------


@dataclass
class CaptureRebuildResult:
    counters: dict[str, int]  # sync_kernel counter names, plus rows_written and friends
    start_mode: str  # START_CHECKPOINT or START_SNAPSHOT
    continuous_at_start: bool | None  # first diff continued the checkpoint's chain; None: no checkpoint used
    trades: int
    delta_rows: int
    precision_events: int
    precision_examples: list[dict[str, object]]
    in_sync_at_end: bool
    final_best_bid: str | None
    final_best_ask: str | None
    seconds: float
    peak_rss_bytes: int
    output: Path
    checkpoint: Path


def _column(frame: pl.DataFrame, name: str, dtype) -> np.ndarray:
    return frame.get_column(name).to_numpy().astype(dtype, copy=False)


def _read(path: Path, columns: list[str], what: str) -> pl.DataFrame:
    present = parquet_io.read_schema(path).names
    missing = [c for c in columns if c not in present]
    if missing:
        raise ValueError(
            f"{path}: {what} lacks column(s) {missing}; the Binance rebuild needs partitions "
            "written from captures (PIPELINE_SOURCE=capture)"
        )
    frame = parquet_io.read_frame(path, columns)
    if "line_no" in columns and not frame.get_column("line_no").is_sorted():
        frame = frame.sort("line_no", maintain_order=True)
    return frame


def _pending_tickers(carried: Path | None, tickers_path: Path, first_checkable: int) -> pl.DataFrame:
    """The tickers, carried in (`carried`, a pending file) and of the day in line order, whose
    update_id is `first_checkable` or later: those diffs of the next day may still answer."""
    kept = pl.col("update_id") >= first_checkable
    day = parquet_io.scan(tickers_path).filter(kept).sort("line_no", maintain_order=True).select(TICKER_COLUMNS)
    if carried is None:
        return day.collect()
    return pl.concat([parquet_io.scan(carried).filter(kept).select(TICKER_COLUMNS), day]).collect()


def _counted(frames: Iterator[pl.DataFrame], rows_read: list[int]) -> Iterator[pl.DataFrame]:
    """`frames`, keeping `rows_read` at (rows before the frame given, rows up to its end)."""
    for frame in frames:
        rows_read[0] = rows_read[1]
        rows_read[1] += frame.height
        yield frame


def _best(st, index: int, tick: Decimal) -> str | None:
    return None if st[index] == EMPTY else str(((int(st[ST_BASE]) + int(st[index])) * tick).normalize())


def rebuild_capture_day(
    deltas_path: Path,
    snapshots_path: Path,
    tickers_path: Path,
    book_path: Path | None,
    trades_path: Path | None,
    output_path: Path,
    checkpoint_in: Path | None,
    checkpoint_out: Path,
    grid: Grid,
    day: dt.date,
    futures: bool,
    depth: int,
    interval_ms: int,
    fidelity_path: Path | None = None,
    fidelity_interval_ms: int = 1000,
    capture_files: int | None = None,
    shape_path: Path | None = None,
    delta_pass: DeltaPassSink | None = None,
    spill_dir: Path | None = None,
) -> CaptureRebuildResult:
    """Replay one instrument-day of a capture; write its books and its end-of-day checkpoint.

    With `fidelity_path`, also the fidelity table `quality/fidelity.py` reads (`write_fidelity`);
    with `shape_path`, the books' shape rows at their snapshot rows (`book_shape.ShapeFile`); with
    `delta_pass`, the metrics' pass over the deltas (`delta_pass_stream.DeltaPassStream`), handed
    the delta batches as they are read and the rows as they are written. The bookTickers are
    sorted in scratch under `spill_dir` (the system's temporary directory when None).
    """
    started = time.perf_counter()
    day_start = int(dt.datetime.combine(day, dt.time(), dt.UTC).timestamp()) * 1_000_000_000
    snaps = _read(
        snapshots_path, ["received_time", "last_update_id", "side_is_bid", "price", "size", "line_no"], "depth_snapshot"
    )
    carried_tickers = None  # the previous day's pending bookTickers (a file)
    precision = PrecisionCounter()
    rows_read = [0, 0]  # delta rows read before the current batch, and with it

    def ticks(values: np.ndarray, seq: np.ndarray) -> np.ndarray:
        return precision.convert(values, grid.tick, "price", rows_read[0], seq)

    def lots(values: np.ndarray, seq: np.ndarray) -> np.ndarray:
        return precision.convert(values, grid.lot, "size", rows_read[0], seq)

    # Deltas are replayed batch by batch (`delta_batches`); the first batch is converted up front
    # for the day's first event and the chain check against the checkpoint.
    frames = _counted(read_delta_batches(deltas_path), rows_read)
    first_frame = next(frames, None)
    first_diffs = diff_arrays(first_frame, ticks, lots) if first_frame is not None else None
    # What the metrics' pass reads of it, handed once the pass's thread is there; not the frame.
    first_passed = delta_pass_columns(first_frame) if first_frame is not None and delta_pass is not None else None
    del first_frame

    # Start where the previous day stopped (its checkpoint and carry), else wait for a REST snapshot.
    (bid, ask, st), carry_in = _start_from(checkpoint_in, grid)
    start_mode, continuous = START_SNAPSHOT, None
    if carry_in is not None:
        start_mode = START_CHECKPOINT if carry_in.sync[0]["state"] == br.LIVE else START_CARRIED
        if start_mode == START_CHECKPOINT and first_diffs is not None:
            last_u = int(carry_in.sync[0]["last_u"])
            first = first_diffs[0]
            continuous = bool(br.follows(futures, last_u, int(first.first_u[0]), int(first.prev_u[0])))
        pending = checkpoint_in.with_name(PENDING_TICKERS_FILE)
        carried_tickers = pending if pending.is_file() else None

    s_start, s_line, s_end = message_groups(_column(snaps, "line_no", np.int64))
    s_lid_rows = _column(snaps, "last_update_id", np.int64)
    s_recv = _column(snaps, "received_time", np.int64)[s_start]
    s_lid = s_lid_rows[s_start]
    s_orig = _snapshot_origin(book_path, s_recv, s_lid)
    sr_is_bid = _column(snaps, "side_is_bid", np.bool_)
    sr_tick = precision.convert(_column(snaps, "price", np.float64), grid.tick, "depth_snapshot.price", 0, s_lid_rows)
    sr_lot = precision.convert(_column(snaps, "size", np.float64), grid.lot, "depth_snapshot.size", 0, s_lid_rows)

    # The fidelity table's two sides, each a top per grid time, handed the tops as they come.
    book_tops = ticker_tops = None
    if fidelity_path is not None:
        book_tops = GridTops(f"{output_path}: books", day_start, fidelity_interval_ms * NS_PER_MS)
        ticker_tops = GridTops(f"{tickers_path}: book_ticker", day_start, fidelity_interval_ms * NS_PER_MS)
    tickers = sort_tickers(
        carried_tickers,
        tickers_path,
        spill_dir,
        lambda values, name, row, u: precision.convert(values, grid.tick, f"book_ticker.{name}", row, u),
        lambda values, name, row, u: precision.convert(values, grid.lot, f"book_ticker.{name}", row, u),
        ticker_tops.add if ticker_tops is not None else None,
    )

    interval_ns = interval_ms * NS_PER_MS
    replay = lr.new_replay_state(day_start, False, interval_ns, start_mode == START_CHECKPOINT)
    sampling = lr.new_sampling(replay, depth)
    book = Book(bid, ask, st)
    sync = br.new_sync() if carry_in is None else carry_in.sync
    snapshot_rows = br.LevelRows(sr_is_bid, sr_tick, sr_lot)
    # Each run gets the window of tickers its diffs can meet (below).
    part = br.new_capture_part(futures, snapshot_rows, no_tickers(), book, sync)
    counters = part.counters
    replay[0]["last_seq"] = sync[0]["last_u"]
    resumed_u = int(sync[0]["last_u"])
    sc.check_resumed_tickers(book, sync, tickers.window(resumed_u, resumed_u), counters)
    first_diff_recv = first_diffs[0].recv[:1] if first_diffs is not None else []
    first_event = min([*first_diff_recv, *s_recv[:1]], default=day_start)
    if interval_ns:
        # Sample from the day's first event on, not from midnight: a capture may start late.
        replay[0]["next_sample"] = day_start + ((first_event - day_start) // interval_ns + 1) * interval_ns

    shape = ShapeFile(shape_path) if shape_path is not None else None
    # The metrics' pass runs on a thread of its own; the pool starts its thread at the first call.
    pass_pool = ThreadPoolExecutor(1, "capture-delta-pass")
    passing = ThreadedDeltaPass(delta_pass, pass_pool, StageTimings()) if delta_pass is not None else None
    # The pass gets the rows at REST snapshots as the kernel writes them (below), not when their
    # batch of rows is built, up to 33,000 rows (55 minutes of the day) later: the deltas after a
    # snapshot's time would wait for its row that long.
    out = BookWriter(depth, grid, day_start, OUTPUT_BATCH_ROWS, shape)
    carried_in = 0 if carry_in is None else len(carry_in.diffs.line)
    # The previous day's buffered diffs go first; only a snapshot replays them, none is a row.
    snapshots = br.new_depth_snapshots(s_line, s_lid, s_start, s_end, s_recv, s_orig)
    replay_parts = BatchedReplay(snapshots, sync, carry_in)
    writer_options = books_writer_options(out.schema)
    filled = 0  # rows in the output buffers, written when they are full or at the end
    with (
        tickers,
        atomic_path(output_path) as tmp,
        parquet_io.parquet_writer(tmp, out.schema, **writer_options) as writer,
        ThreadPoolExecutor(1, "capture-book-read") as read_pool,
        ThreadPoolExecutor(1, "capture-book-write") as write_pool,
        pass_pool,
    ):
        # As the lake's rebuild: the next batch is read and converted, and the last rows encoded
        # and written, on helper threads while the kernel (which releases the GIL) replays.
        background = BackgroundWriter(writer, write_pool, StageTimings())

        def write_rows(n: int) -> None:
            rows = out.buffers
            if book_tops is not None:
                bid, ask = rows.bid_ticks[:n, 0], rows.ask_ticks[:n, 0]
                in_sync = (rows.synced[:n] != 0) & (bid >= 0) & (ask >= 0)  # -1: no level
                book_tops.add(rows.recv[:n][in_sync], bid[in_sync].astype(np.int64), ask[in_sync].astype(np.int64))
            background.write_rows(out, n)

        def converted(frame: pl.DataFrame) -> tuple[br.CaptureDiffs, br.LevelRows]:
            if passing is not None:
                passing.deltas(delta_pass_columns(frame))
            return diff_arrays(frame, ticks, lots)

        if passing is not None:
            passing.snapshot_rows_only_at(s_recv)  # a row at each REST snapshot, none other
            if first_passed is not None:
                passing.deltas(first_passed)
                del first_passed
        batches = (converted(frame) for frame in frames)
        first = [first_diffs] if first_diffs is not None else []
        # Read ahead only now: the snapshots' and tickers' conversions above share `precision`.
        for run in replay_parts.runs(itertools.chain(first, prefetched(batches, read_pool))):
            part = part._replace(tickers=tickers.for_run(run))
            while True:
                before = filled
                filled = br.replay_capture(part, run, sampling, out.buffers, filled)
                if passing is not None and filled > before:
                    passing.snapshots(*snapshot_row_ladders(out.buffers, before, filled, depth))
                cursor = run.cursor[0]
                done = cursor["next_diff"] >= len(run.diffs.line) and cursor["next_snap"] >= len(run.snaps.line)
                if filled == out.capacity:
                    write_rows(filled)
                    filled = 0
                elif not done:
                    raise RuntimeError(f"capture replay of {deltas_path} made no progress")  # a kernel bug
                if done:
                    break
        if passing is not None:
            passing.end_of_deltas()
        if filled:
            write_rows(filled)
        background.wait()
        if passing is not None:
            passing.wait()  # an error of the pass fails the rebuild before its books are in place

    if shape is not None:
        shape.write(output_path)
    if passing is not None:
        passing.write(output_path)
    in_sync = bool(sync[0]["state"] == br.LIVE)
    br.finish(sync, counters, replay_parts.last_run.cursor, len(replay_parts.last_run.diffs.line))
    carry_out = replay_parts.carry
    write_sync_carry(checkpoint_out.with_name(SYNC_CARRY_FILE), carry_out, grid)
    write_checkpoint(checkpoint_out, bid, ask, st, grid, replay)
    # Tickers for diffs not applied yet may be answered by diffs of the next day (or carried into it).
    pending = _pending_tickers(carried_tickers, tickers_path, sc.first_checkable_u(carry_out))
    write_lake_parquet_atomic(pending, checkpoint_out.with_name(PENDING_TICKERS_FILE))

    result_counters = br.counter_dict(counters)
    result_counters.update(
        rows_written=int(sampling.counters[0]["rows_written"]),
        rows_written_unsynced=int(sampling.counters[0]["rows_written_unsynced"]),
        updates_outside_window=int(st[ST_OUTSIDE]),
        levels_evicted=int(st[ST_EVICTED]),
        diffs_carried_in=carried_in,
        diffs_carried_out=len(carry_out.diffs.line),
    )
    if fidelity_path is not None and book_tops is not None and ticker_tops is not None:
        write_fidelity(
            fidelity_path,
            book_tops,
            ticker_tops,
            {
                "capture_files": capture_files,
                **{
                    name: result_counters[name]
                    for name in (
                        "diffs",
                        "applied",
                        "gaps",
                        "resyncs",
                        "ticker_checks",
                        "ticker_mismatches",
                        "rows_written",
                        "rows_written_unsynced",
                        "unsynced_at_end",
                    )
                },
                "sample_interval_ms": fidelity_interval_ms,
                "tick_size": str(grid.tick_size),
            },
        )
    return CaptureRebuildResult(
        counters=result_counters,
        start_mode=start_mode,
        continuous_at_start=continuous,
        trades=parquet_io.num_rows(trades_path) if trades_path and trades_path.is_file() else 0,
        delta_rows=rows_read[1],
        precision_events=precision.count,
        precision_examples=precision.examples,
        in_sync_at_end=in_sync,
        final_best_bid=_best(st, ST_BEST_BID, grid.tick_size),
        final_best_ask=_best(st, ST_BEST_ASK, grid.tick_size),
        seconds=time.perf_counter() - started,
        peak_rss_bytes=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        output=output_path,
        checkpoint=checkpoint_out,
    )


def _start_from(checkpoint_in: Path | None, grid: Grid) -> tuple[Book, sc.SyncCarry | None]:
    """The book and sync carry the day starts from: the previous day's checkpoint and carry file
    (its book even when out of sync: the rows show it, unsynced, until a snapshot). A checkpoint
    written before carry files existed resumes only when in sync; without either, an empty book."""
    loaded = load_checkpoint(checkpoint_in, grid) if checkpoint_in else None
    if loaded is None:
        return new_book(), None
    bid, ask, st, meta = loaded
    carry = read_sync_carry(checkpoint_in.with_name(SYNC_CARRY_FILE), grid)
    if carry is None and meta["synced"]:
        carry = sc.unbuffered_carry(br.new_sync(br.LIVE, int(meta["last_sequence_number"])))
    return (Book(bid, ask, st) if carry is not None else new_book()), carry


def _snapshot_origin(book_path: Path | None, s_recv: np.ndarray, s_lid: np.ndarray) -> np.ndarray:
    """Exchange time of each REST snapshot from the `book` table (futures snapshots carry one);
    the receive time where the table has no matching row."""
    if not len(s_recv) or book_path is None or not book_path.is_file():
        return s_recv.copy()
    book = parquet_io.read_frame(book_path, ["origin_time", "received_time", "sequence_number"])
    keys = pl.DataFrame({"received_time": s_recv, "sequence_number": s_lid})
    joined = keys.join(
        book.unique(["received_time", "sequence_number"], keep="first"),
        on=["received_time", "sequence_number"],
        how="left",
        maintain_order="left",
    )
    return _column(joined.select(pl.col("origin_time").fill_null(pl.col("received_time"))), "origin_time", np.int64)

"""Books of one instrument-day rebuilt from a Binance capture in the raw lake, with the exchange's rules.

Reads the raw partitions the capture source wrote (`book_delta_v2` with `first_update_id`,
`prev_update_id` and `line_no`; `depth_snapshot`; `book_ticker`; `book` for the snapshots'
exchange time; `trades`, only counted) and replays them in capture line order with the sync
rules of `binance_replay` (spot U/u, futures pu; diffs buffered until a REST snapshot; a broken
chain is a gap; the book stays out of sync until a later snapshot re-syncs it). bookTicker
messages are the oracle: one whose `u` is the final `u` of an applied diff must equal the best
bid and ask after it.

Rows have the vendor path's format (`rebuild.output_schema`): one at every REST snapshot line,
then one every `book.sample_interval_ms` of receive time from the day's first event (0: one after
every diff line). `synced` is true only in the LIVE state, never from a gap until the re-sync,
and `sequence_number` is the last applied `u`.

Day boundaries: a day starts from the previous day's end-of-day checkpoint (full-depth book, last
`u`) when that checkpoint was in sync: the first diff must continue the chain (spot
`U == u + 1`, futures `pu == u`), otherwise it is counted as a gap and the day waits for a REST
snapshot. Without an in-sync checkpoint the day waits for a snapshot from its start. bookTicker
messages written before midnight for a diff after it are carried in the checkpoint directory
(`book_ticker_pending.parquet`) and checked the next day, so per-day totals add up to a replay
of the whole capture.

Crossed or locked books after a diff (impossible while in sync, so a sign of bad data) are
counted and resolved like the vendor path (`ladder.resolve_cross`: the side the diff touched last wins).

Memory: a day's capture tables are loaded whole (captures are small next to the vendor's
full-depth days); the output is written in batches of `rebuild.OUTPUT_BATCH_ROWS`.
"""

from __future__ import annotations

import datetime as dt
import resource
import time
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import numba as nb
import numpy as np
import polars as pl
import pyarrow.parquet as pq

from market_pipeline.vendors.binance import sync_kernel as br
from market_pipeline.core.book import delta_replay as lr
from market_pipeline.vendors.binance.verify import message_groups
from market_pipeline.core.book.ladder import (
    EMPTY,
    ST_BASE,
    ST_BEST_ASK,
    ST_BEST_BID,
    ST_EVICTED,
    ST_OUTSIDE,
    clear_book,
    new_book,
    resolve_cross,
    set_level,
)
from market_pipeline.core.book.rebuild import Grid, BookWriter, PrecisionCounter, load_checkpoint, write_checkpoint
from market_pipeline.core.lake.files import atomic_path, write_parquet_atomic
from market_pipeline.core.lake.paths import PARTITION_FILE, books_partition_dir, checkpoint_path, raw_partition_dir
from market_pipeline.core.lake.schemas import BOOK_TICKER_SCHEMA
from market_pipeline.settings import Instrument, PipelineSettings
from market_pipeline.vendors.binance.capture_format import LAKE_EXCHANGES

NS_PER_MS = 1_000_000
PENDING_TICKERS_FILE = "book_ticker_pending.parquet"
START_CHECKPOINT = "previous_day_checkpoint"
START_SNAPSHOT = "waiting_for_snapshot"

# Kernel state carried between calls (a call returns when the output buffer is full).
K_DIFF = 0  # next diff message
K_SNAP = 1  # next REST snapshot
K_STATE = 2  # br.WAITING, br.FIRST or br.LIVE
K_LID = 3  # lastUpdateId of the snapshot the book was loaded from
K_BUFFERED = 4  # first diff buffered while waiting for a snapshot
K_EVER_SYNCED = 5
K_CROSSED_LEVELS = 6  # levels removed resolving crossed books
K_ROWS_APPLIED = 7  # level updates (rows) of the applied diffs
N_K = 8

_TICKER_COLUMNS = ["received_time", "update_id", "bid_price", "bid_size", "ask_price", "ask_size"]


@nb.njit(cache=True, nogil=True)
def _step(
    futures, i, d_first, d_last, d_prev, d_start, d_end, d_recv, d_orig, r_is_bid, r_tick, r_lot,
    t_u_sorted, t_order, t_bt, t_bl, t_at, t_al, bid, ask, st, ks, rs, counters,
):
    """Handle diff i under the sync rules (the book is not WAITING); keeps ks and rs current."""
    applied = counters[br.B_APPLIED]
    state, last_u = br.handle_diff(
        futures, ks[K_STATE], rs[lr.R_LAST_SEQ], ks[K_LID], ks[K_EVER_SYNCED] != 0, i,
        d_first, d_last, d_prev, d_start, d_end, r_is_bid, r_tick, r_lot,
        t_u_sorted, t_order, t_bt, t_bl, t_at, t_al, bid, ask, st, counters,
    )
    ks[K_STATE] = state
    if state == br.WAITING:
        ks[K_BUFFERED] = i  # the diff that broke the chain waits for the next snapshot
    elif state == br.LIVE:
        ks[K_EVER_SYNCED] = 1
    if counters[br.B_APPLIED] > applied:
        rs[lr.R_LAST_SEQ] = last_u
        rs[lr.R_LAST_RECV] = d_recv[i]
        rs[lr.R_LAST_ORIG] = d_orig[i]
        ks[K_ROWS_APPLIED] += d_end[i] - d_start[i]
        if st[ST_BEST_BID] != EMPTY and st[ST_BEST_ASK] != EMPTY and st[ST_BEST_BID] >= st[ST_BEST_ASK]:
            bid_is_newer = True
            for r in range(d_start[i], d_end[i]):
                if r_lot[r] > 0:
                    bid_is_newer = r_is_bid[r]
            ks[K_CROSSED_LEVELS] += resolve_cross(bid, ask, st, bid_is_newer)
    rs[lr.R_SYNCED] = state == br.LIVE


@nb.njit(cache=True, nogil=True)
def replay_capture_day(
    futures,
    d_line, d_first, d_last, d_prev, d_start, d_end, d_recv, d_orig, r_is_bid, r_tick, r_lot,
    s_line, s_lid, s_start, s_end, s_recv, s_orig, sr_is_bid, sr_tick, sr_lot,
    t_u_sorted, t_order, t_bt, t_bl, t_at, t_al,
    bid, ask, st, ks, rs, counters, row_counters, out, depth,
):
    """Visit diffs and snapshots in line order, emitting rows; returns the rows written to `out`.

    Returns early when `out` is full; call again with the same state to continue.
    """
    n_d = d_line.shape[0]
    n_s = s_line.shape[0]
    capacity = out[0].shape[0]
    interval = rs[lr.R_INTERVAL]
    n_out = 0
    while ks[K_DIFF] < n_d or ks[K_SNAP] < n_s:
        i = ks[K_DIFF]
        k = ks[K_SNAP]
        is_snapshot = k < n_s and (i >= n_d or s_line[k] < d_line[i])
        t = s_recv[k] if is_snapshot else d_recv[i]
        if interval > 0:
            # Samples due before this event show the book as it was.
            while rs[lr.R_NEXT_SAMPLE] < t:
                if n_out >= capacity:
                    return n_out
                lr.emit_row(bid, ask, st, rs, row_counters, out, n_out, rs[lr.R_NEXT_SAMPLE],
                         rs[lr.R_LAST_ORIG], lr.TRIGGER_INTERVAL, depth)
                n_out += 1
                rs[lr.R_NEXT_SAMPLE] += interval
        if n_out >= capacity:
            return n_out
        if is_snapshot:
            counters[br.B_SNAPSHOTS] += 1
            if ks[K_STATE] == br.WAITING:
                clear_book(bid, ask, st)
                for r in range(s_start[k], s_end[k]):
                    set_level(bid, ask, st, sr_is_bid[r], sr_tick[r], sr_lot[r])
                ks[K_LID] = s_lid[k]
                ks[K_STATE] = br.FIRST
                rs[lr.R_LAST_SEQ] = s_lid[k]
                if ks[K_EVER_SYNCED] != 0:
                    counters[br.B_RESYNCS] += 1
                # Replay the diffs buffered while waiting; their lines precede this snapshot.
                for j in range(ks[K_BUFFERED], i):
                    _step(futures, j, d_first, d_last, d_prev, d_start, d_end, d_recv, d_orig,
                          r_is_bid, r_tick, r_lot, t_u_sorted, t_order, t_bt, t_bl, t_at, t_al,
                          bid, ask, st, ks, rs, counters)
                    if ks[K_STATE] == br.WAITING:
                        break
            rs[lr.R_SYNCED] = ks[K_STATE] == br.LIVE
            lr.emit_row(bid, ask, st, rs, row_counters, out, n_out, s_recv[k], s_orig[k], lr.TRIGGER_SNAPSHOT, depth)
            n_out += 1
            ks[K_SNAP] = k + 1
        else:
            counters[br.B_DIFFS] += 1
            if ks[K_STATE] != br.WAITING:
                _step(futures, i, d_first, d_last, d_prev, d_start, d_end, d_recv, d_orig,
                      r_is_bid, r_tick, r_lot, t_u_sorted, t_order, t_bt, t_bl, t_at, t_al,
                      bid, ask, st, ks, rs, counters)
            ks[K_DIFF] = i + 1
            if interval == 0:
                lr.emit_row(bid, ask, st, rs, row_counters, out, n_out, d_recv[i], d_orig[i], lr.TRIGGER_MESSAGE, depth)
                n_out += 1
    return n_out


# --- Python side -------------------------------------------------------------------------------


@dataclass
class CaptureRebuildResult:
    counters: dict[str, int]  # binance_replay counter names, plus rows_written and friends
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

    def metadata(self, key: str) -> dict[str, object]:
        """Per-instrument metadata for the asset (numbers the UI plots, then one detail dict)."""
        c = self.counters
        return {
            f"{key} messages": c["diffs"],
            f"{key} diffs_applied": c["applied"],
            f"{key} deltas_applied": c["deltas_applied"],
            f"{key} gaps": c["gaps"],
            f"{key} resyncs": c["resyncs"],
            f"{key} ticker_checks": c["ticker_checks"],
            f"{key} ticker_mismatches": c["ticker_mismatches"],
            f"{key} crossed_events": c["crossed_events"],
            f"{key} precision_loss_events": self.precision_events,
            f"{key} deltas_per_second": self.delta_rows / self.seconds if self.seconds else 0.0,
            f"{key} peak_rss_mb": self.peak_rss_bytes / 2**20,
            f"{key} start_mode": self.start_mode,
            f"{key} detail": {
                "counters": c,
                "trades": self.trades,
                "continuous_at_start": self.continuous_at_start,
                "in_sync_at_end": self.in_sync_at_end,
                "final_best_bid": self.final_best_bid,
                "final_best_ask": self.final_best_ask,
                "precision_examples": self.precision_examples[:20],
                "seconds": round(self.seconds, 3),
                "output": str(self.output),
            },
        }


def _column(frame: pl.DataFrame, name: str, dtype) -> np.ndarray:
    return frame.get_column(name).to_numpy().astype(dtype, copy=False)


def _read(path: Path, columns: list[str], what: str) -> pl.DataFrame:
    present = pq.read_schema(path).names
    missing = [c for c in columns if c not in present]
    if missing:
        raise ValueError(
            f"{path}: {what} lacks column(s) {missing}; the Binance rebuild needs partitions "
            "written from captures (PIPELINE_SOURCE=capture)"
        )
    frame = pl.read_parquet(path, columns=columns)
    if "line_no" in columns and not frame.get_column("line_no").is_sorted():
        frame = frame.sort("line_no", maintain_order=True)
    return frame


def _empty_tickers() -> pl.DataFrame:
    return pl.DataFrame(schema={name: BOOK_TICKER_SCHEMA[name] for name in _TICKER_COLUMNS})


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
) -> CaptureRebuildResult:
    """Replay one instrument-day of a capture; write its books and its end-of-day checkpoint."""
    started = time.perf_counter()
    day_start = int(dt.datetime.combine(day, dt.time(), dt.timezone.utc).timestamp()) * 1_000_000_000
    deltas = _read(
        deltas_path,
        ["origin_time", "received_time", "sequence_number", "first_update_id", "prev_update_id",
         "side_is_bid", "price", "size", "line_no"],
        "book_delta_v2",
    )
    snaps = _read(snapshots_path, ["received_time", "last_update_id", "side_is_bid", "price", "size", "line_no"],
                  "depth_snapshot")
    tickers = _read(tickers_path, [*_TICKER_COLUMNS, "line_no"], "book_ticker").drop("line_no")
    precision = PrecisionCounter()

    d_start, d_line, d_end = message_groups(_column(deltas, "line_no", np.int64))
    seq_rows = _column(deltas, "sequence_number", np.int64)
    d_first = _column(deltas, "first_update_id", np.int64)[d_start]
    d_last = seq_rows[d_start]
    d_prev = deltas.get_column("prev_update_id").fill_null(-1).to_numpy().astype(np.int64)[d_start]

    # Start: the previous day's checkpoint when it was in sync, else wait for a REST snapshot.
    loaded = load_checkpoint(checkpoint_in, grid) if checkpoint_in else None
    start_mode, continuous = START_SNAPSHOT, None
    if loaded is not None and loaded[3]["synced"]:
        bid, ask, st, meta = loaded
        start_mode = START_CHECKPOINT
        last_u = int(meta["last_sequence_number"])
        if len(d_start):
            continuous = bool(d_prev[0] == last_u if futures else d_first[0] == last_u + 1)
        pending = checkpoint_in.with_name(PENDING_TICKERS_FILE)
        if pending.is_file():
            tickers = pl.concat([pl.read_parquet(pending).select(_TICKER_COLUMNS), tickers])
    else:
        bid, ask, st = new_book()
        last_u = 0

    d_recv = _column(deltas, "received_time", np.int64)[d_start]
    d_orig = _column(deltas, "origin_time", np.int64)[d_start]
    r_is_bid = _column(deltas, "side_is_bid", np.bool_)
    r_tick = precision.convert(_column(deltas, "price", np.float64), grid.tick, "price", 0, seq_rows)
    r_lot = precision.convert(_column(deltas, "size", np.float64), grid.lot, "size", 0, seq_rows)

    s_start, s_line, s_end = message_groups(_column(snaps, "line_no", np.int64))
    s_lid_rows = _column(snaps, "last_update_id", np.int64)
    s_recv = _column(snaps, "received_time", np.int64)[s_start]
    s_lid = s_lid_rows[s_start]
    s_orig = _snapshot_origin(book_path, s_recv, s_lid)
    sr_is_bid = _column(snaps, "side_is_bid", np.bool_)
    sr_tick = precision.convert(_column(snaps, "price", np.float64), grid.tick, "depth_snapshot.price", 0, s_lid_rows)
    sr_lot = precision.convert(_column(snaps, "size", np.float64), grid.lot, "depth_snapshot.size", 0, s_lid_rows)

    t_u = _column(tickers, "update_id", np.int64)
    t_order = np.argsort(t_u, kind="stable").astype(np.int64)
    t_u_sorted = t_u[t_order]
    t_bt, t_bl, t_at, t_al = (
        precision.convert(_column(tickers, name, np.float64), step, f"book_ticker.{name}", 0, t_u)
        for name, step in (("bid_price", grid.tick), ("bid_size", grid.lot),
                           ("ask_price", grid.tick), ("ask_size", grid.lot))
    )

    counters = np.zeros(br.N_B_COUNTERS, np.int64)
    counters[br.B_FIRST_MISMATCH_TICKER] = -1
    row_counters = np.zeros(lr.N_COUNTERS, np.int64)
    ks = np.zeros(N_K, np.int64)
    interval_ns = interval_ms * NS_PER_MS
    rs = lr.new_replay_state(day_start, False, interval_ns, start_mode == START_CHECKPOINT)
    if start_mode == START_CHECKPOINT:
        ks[K_STATE] = br.LIVE
        ks[K_EVER_SYNCED] = 1
        rs[lr.R_LAST_SEQ] = last_u
        # A ticker for the diff that ended the previous day is checked against the checkpoint.
        br.check_tickers(st, bid, ask, last_u, t_u_sorted, t_order, t_bt, t_bl, t_at, t_al, counters)
    first_event = min([*d_recv[:1], *s_recv[:1]], default=day_start)
    if interval_ns:
        # Sample from the day's first event on, not from midnight: a capture may start late.
        rs[lr.R_NEXT_SAMPLE] = day_start + ((first_event - day_start) // interval_ns + 1) * interval_ns

    out = BookWriter(depth, grid)
    arrays = (
        d_line, d_first, d_last, d_prev, d_start, d_end, d_recv, d_orig, r_is_bid, r_tick, r_lot,
        s_line, s_lid, s_start, s_end, s_recv, s_orig, sr_is_bid, sr_tick, sr_lot,
        t_u_sorted, t_order, t_bt, t_bl, t_at, t_al,
    )
    with atomic_path(output_path) as tmp, pq.ParquetWriter(tmp, out.schema, compression="zstd") as writer:
        while True:
            n_out = replay_capture_day(futures, *arrays, bid, ask, st, ks, rs, counters, row_counters,
                                       out.buffers, depth)
            if n_out:
                writer.write_batch(out.batch(n_out))
            if ks[K_DIFF] >= len(d_line) and ks[K_SNAP] >= len(s_line):
                break
            if n_out == 0:
                raise RuntimeError(f"capture replay of {deltas_path} made no progress")  # a kernel bug

    in_sync = bool(ks[K_STATE] == br.LIVE)
    if ks[K_STATE] == br.WAITING:
        counters[br.B_UNSYNCED_AT_END] += len(d_line) - ks[K_BUFFERED]
    write_checkpoint(checkpoint_out, bid, ask, st, grid, rs)
    # Tickers for diffs not seen yet may be answered by the next day's first diffs.
    pending = tickers.filter(pl.col("update_id") > rs[lr.R_LAST_SEQ]) if in_sync else _empty_tickers()
    write_parquet_atomic(pending, checkpoint_out.with_name(PENDING_TICKERS_FILE))

    result_counters = {name: int(counters[i]) for i, name in enumerate(br.B_COUNTER_NAMES)}
    result_counters.update(
        deltas_applied=int(ks[K_ROWS_APPLIED]),
        crossed_levels_removed=int(ks[K_CROSSED_LEVELS]),
        rows_written=int(row_counters[lr.C_ROWS_OUT]),
        rows_written_unsynced=int(row_counters[lr.C_ROWS_OUT_UNSYNCED]),
        updates_outside_window=int(st[ST_OUTSIDE]),
        levels_evicted=int(st[ST_EVICTED]),
    )
    return CaptureRebuildResult(
        counters=result_counters,
        start_mode=start_mode,
        continuous_at_start=continuous,
        trades=pq.ParquetFile(trades_path).metadata.num_rows if trades_path and trades_path.is_file() else 0,
        delta_rows=deltas.height,
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


def _snapshot_origin(book_path: Path | None, s_recv: np.ndarray, s_lid: np.ndarray) -> np.ndarray:
    """Exchange time of each REST snapshot from the `book` table (futures snapshots carry one);
    the receive time where the table has no matching row."""
    if not len(s_recv) or book_path is None or not book_path.is_file():
        return s_recv.copy()
    book = pl.read_parquet(book_path, columns=["origin_time", "received_time", "sequence_number"])
    keys = pl.DataFrame({"received_time": s_recv, "sequence_number": s_lid})
    joined = keys.join(book.unique(["received_time", "sequence_number"], keep="first"),
                       on=["received_time", "sequence_number"], how="left", maintain_order="left")
    return _column(joined.select(pl.col("origin_time").fill_null(pl.col("received_time"))), "origin_time", np.int64)


def rebuild_capture_instrument_day(
    settings: PipelineSettings, instrument: Instrument, day: dt.date
) -> CaptureRebuildResult | None:
    """Rebuild one instrument-day from its raw capture partitions; None when no capture covers it."""
    from market_pipeline.vendors.registry import build_source

    lake = settings.lake_dir
    ex, sym = instrument.exchange, instrument.symbol
    raw = {t: raw_partition_dir(lake, t, ex, sym, day) / PARTITION_FILE
           for t in ("book_delta_v2", "depth_snapshot", "book_ticker", "book", "trades")}
    if not raw["book_delta_v2"].is_file() and day not in build_source(settings).available_days(
        "book_delta_v2", instrument
    ):
        return None
    for table in ("book_delta_v2", "depth_snapshot", "book_ticker"):
        if not raw[table].is_file():
            raise FileNotFoundError(f"{instrument.key} {day}: raw partition missing: {raw[table]}")
    return rebuild_capture_day(
        deltas_path=raw["book_delta_v2"],
        snapshots_path=raw["depth_snapshot"],
        tickers_path=raw["book_ticker"],
        book_path=raw["book"],
        trades_path=raw["trades"],
        output_path=books_partition_dir(lake, ex, sym, day) / PARTITION_FILE,
        checkpoint_in=checkpoint_path(lake, ex, sym, day - dt.timedelta(days=1)),
        checkpoint_out=checkpoint_path(lake, ex, sym, day),
        grid=Grid(instrument.tick_size, instrument.lot_size),
        day=day,
        futures=instrument.exchange != LAKE_EXCHANGES["spot"],
        depth=settings.book.depth,
        interval_ms=settings.book.sample_interval_ms,
    )

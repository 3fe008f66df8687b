"""Verify a raw Binance capture: exact replay with the sync rules, bookTicker as the oracle."""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path

import numpy as np
import polars as pl

from market_pipeline.core.book import delta_replay as lr
from market_pipeline.core.book.fixed_point import to_steps
from market_pipeline.core.book.ladder import EMPTY, ST_BASE, ST_BEST_ASK, ST_BEST_BID, new_book
from market_pipeline.core.lake import parquet_io
from market_pipeline.vendors.binance import sync_kernel as br
from market_pipeline.vendors.binance.capture_format import DELTA_SCHEMA, SNAPSHOT_LEVELS_SCHEMA, TICKER_SCHEMA
from market_pipeline.vendors.binance.capture_stream import CaptureParser
from market_pipeline.vendors.binance.delta_batches import BatchedReplay, diff_arrays, message_groups, read_delta_batches
from market_pipeline.vendors.binance.ticker_store import SCRATCH_OPTIONS, no_tickers, sort_tickers
from market_pipeline.vendors.capture_figures import NO_BOOK_CHECKS

MAX_DECIMALS = 10


def infer_step(values: np.ndarray) -> Decimal:
    """The coarsest power-of-ten step on which every value lies (0.01 for cent prices)."""
    finite = values[np.isfinite(values)]
    for decimals in range(MAX_DECIMALS + 1):
        scaled = finite * 10.0**decimals
        if np.all(np.abs(scaled - np.rint(scaled)) <= 1e-6 * np.maximum(1.0, np.abs(scaled)) * 1e-3):
            return Decimal(1).scaleb(-decimals)
    raise ValueError(f"values need more than {MAX_DECIMALS} decimals")


def _steps(values: np.ndarray, step: Decimal) -> np.ndarray:
    steps, off_grid = to_steps(values, float(step), np.empty(1, np.int64), 0)
    if off_grid:
        raise ValueError(f"{off_grid} values are not multiples of {step}")
    return steps


def verify_capture(paths: Sequence[Path]) -> dict:
    """Replay capture files of one instrument exactly (verify-capture's figures), in bounded memory.

    The files are parsed chunk by chunk (`capture_stream`): deltas and bookTickers go to scratch
    Parquet files, REST snapshots are kept (a few), trades only counted, and the tick and lot (the
    coarsest power-of-ten steps of every price and size) follow the chunks. The deltas are then
    replayed in batches of whole messages (`delta_batches`), each batch meeting the window of
    bookTickers it can check (`ticker_store`).
    """
    parser = CaptureParser(paths)
    tick = lot = Decimal(1)
    snapshots: list[pl.DataFrame] = [pl.DataFrame(schema=SNAPSHOT_LEVELS_SCHEMA)]
    trades = 0
    with tempfile.TemporaryDirectory(prefix="verify-capture-") as scratch:
        deltas_path = Path(scratch) / "book_delta_v2.parquet"
        tickers_path = Path(scratch) / "book_ticker.parquet"
        with (
            parquet_io.parquet_writer(deltas_path, pl.DataFrame(schema=DELTA_SCHEMA).to_arrow().schema) as deltas,
            parquet_io.parquet_writer(
                tickers_path, pl.DataFrame(schema=TICKER_SCHEMA).to_arrow().schema, **SCRATCH_OPTIONS
            ) as tickers,
        ):
            for chunk in parser.chunks():
                d, s, t = chunk["book_delta_v2"], chunk["depth_snapshot"], chunk["book_ticker"]
                prices = [d["price"], s["price"], t["bid_price"], t["ask_price"]]
                sizes = [d["size"], s["size"], t["bid_size"], t["ask_size"]]
                tick = min(tick, infer_step(np.concatenate([c.to_numpy() for c in prices])))
                lot = min(lot, infer_step(np.concatenate([c.to_numpy() for c in sizes])))
                deltas.write_table(d.to_arrow())
                snapshots.append(s)
                tickers.write_table(t.to_arrow())
                trades += chunk["trades"].height
        market, exchange, symbol = parser.instrument()
        result: dict[str, object] = {"market": market, "exchange": exchange, "symbol": symbol}
        snaps = pl.concat(snapshots)
        result.update(_replay(market != "spot", deltas_path, snaps, tickers_path, trades, tick, lot))
    return result


def _replay(
    futures: bool,
    deltas_path: Path,
    snaps: pl.DataFrame,
    tickers_path: Path,
    trades: int,
    tick: Decimal,
    lot: Decimal,
) -> dict:
    """The replay's figures (verify-capture's, in its key order); deltas and bookTickers read in
    batches (scratch beside `deltas_path`), the REST snapshots whole."""
    s_start, s_line, s_end = message_groups(snaps["line_no"].to_numpy())
    s_recv = snaps["received_time"].to_numpy()[s_start]
    depth_snaps = br.new_depth_snapshots(
        s_line, snaps["last_update_id"].to_numpy()[s_start], s_start, s_end, s_recv, s_recv
    )
    snap_rows = br.LevelRows(
        snaps["side_is_bid"].to_numpy(), _steps(snaps["price"].to_numpy(), tick), _steps(snaps["size"].to_numpy(), lot)
    )
    part = br.new_capture_part(futures, snap_rows, no_tickers(), new_book(), br.new_sync())
    sampling, no_rows = lr.new_sampling(lr.new_replay_state(0, False, 0, False), 1), lr.no_rows()
    # The diffs' and the tickers' values to steps alike (the callbacks' other arguments, which
    # name the values for the precision counts of the pipeline's rebuild, are not used here).
    ticks, lots = (lambda v, *_: _steps(v, tick)), (lambda v, *_: _steps(v, lot))
    batches = (diff_arrays(frame, ticks, lots) for frame in read_delta_batches(deltas_path))
    parts = BatchedReplay(depth_snaps, part.sync, None)
    with sort_tickers(None, tickers_path, deltas_path.parent, ticks, lots) as tickers:
        for run in parts.runs(batches):
            part = part._replace(tickers=tickers.for_run(run))
            br.replay_capture(part, run, sampling, no_rows, 0)
    sync, counters = part.sync, part.counters
    br.finish(sync, counters, parts.last_run.cursor, len(parts.last_run.diffs.line))
    st = part.book.st
    result: dict[str, object] = br.counter_dict(counters)
    result["trades"] = trades
    result["in_sync_at_end"] = bool(sync[0]["state"] == br.LIVE)
    result["tick_size"] = str(tick)
    result["lot_size"] = str(lot)
    for key, index in (("final_best_bid", ST_BEST_BID), ("final_best_ask", ST_BEST_ASK)):
        result[key] = None if st[index] == EMPTY else str(((st[ST_BASE] + st[index]) * tick).normalize())
    # verify-capture's one shape: Binance sends no book checksum and its chain breaks are not kept
    # by hour here (the lake's validation_reports_hourly has them).
    result.update(NO_BOOK_CHECKS)
    return result

"""Verify a raw Binance capture: exact replay with the sync rules, bookTicker as the oracle."""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path

import numpy as np

from market_pipeline.core.book import delta_replay as lr
from market_pipeline.core.book.fixed_point import to_steps
from market_pipeline.core.book.ladder import EMPTY, ST_BASE, ST_BEST_ASK, ST_BEST_BID, new_book
from market_pipeline.vendors.binance import sync_kernel as br
from market_pipeline.vendors.binance.capture_format import CaptureTables, parse_capture
from market_pipeline.vendors.binance.delta_batches import message_groups

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


def replay_tables(tables: CaptureTables, tick: Decimal | None = None, lot: Decimal | None = None) -> dict:
    deltas, snaps, tickers = tables.book_delta_v2, tables.depth_snapshot, tables.book_ticker
    prices = np.concatenate(
        [c.to_numpy() for c in (deltas["price"], snaps["price"], tickers["bid_price"], tickers["ask_price"])]
    )
    sizes = np.concatenate(
        [c.to_numpy() for c in (deltas["size"], snaps["size"], tickers["bid_size"], tickers["ask_size"])]
    )
    tick = tick or infer_step(prices)
    lot = lot or infer_step(sizes)

    d_start, d_line, d_end = message_groups(deltas["line_no"].to_numpy())
    s_start, s_line, s_end = message_groups(snaps["line_no"].to_numpy())
    d_recv = deltas["received_time"].to_numpy()[d_start]
    s_recv = snaps["received_time"].to_numpy()[s_start]
    diffs = br.CaptureDiffs(
        d_line,
        deltas["first_update_id"].to_numpy()[d_start],
        deltas["sequence_number"].to_numpy()[d_start],
        deltas["prev_update_id"].fill_null(-1).to_numpy()[d_start],
        d_start,
        d_end,
        d_recv,
        deltas["origin_time"].to_numpy()[d_start],
    )
    diff_rows = br.LevelRows(
        deltas["side_is_bid"].to_numpy(),
        _steps(deltas["price"].to_numpy(), tick),
        _steps(deltas["size"].to_numpy(), lot),
    )
    depth_snaps = br.DepthSnapshots(s_line, snaps["last_update_id"].to_numpy()[s_start], s_start, s_end, s_recv, s_recv)
    snap_rows = br.LevelRows(
        snaps["side_is_bid"].to_numpy(), _steps(snaps["price"].to_numpy(), tick), _steps(snaps["size"].to_numpy(), lot)
    )
    t_u = tickers["update_id"].to_numpy()
    t_order = np.argsort(t_u, kind="stable")
    ticker_arrays = br.Tickers(
        t_u[t_order],
        t_order,
        _steps(tickers["bid_price"].to_numpy(), tick),
        _steps(tickers["bid_size"].to_numpy(), lot),
        _steps(tickers["ask_price"].to_numpy(), tick),
        _steps(tickers["ask_size"].to_numpy(), lot),
    )

    book = new_book()
    sync, counters, cursor = br.new_sync(), br.new_counters(), br.new_cursor()
    br.replay_capture(
        tables.market != "spot",
        diffs,
        diff_rows,
        depth_snaps,
        snap_rows,
        ticker_arrays,
        book,
        sync,
        counters,
        cursor,
        lr.new_replay_state(0, False, 0, False),
        lr.new_counters(),
        lr.new_rows(0, 1),
        0,
        1,
        False,
    )
    br.finish(sync, counters, cursor, len(d_line))
    st = book.st
    result: dict[str, object] = {"market": tables.market, "exchange": tables.exchange, "symbol": tables.symbol}
    result.update(br.counter_dict(counters))
    result["trades"] = tables.trades.height
    result["in_sync_at_end"] = bool(sync[0]["state"] == br.LIVE)
    result["tick_size"] = str(tick)
    result["lot_size"] = str(lot)
    for key, index in (("final_best_bid", ST_BEST_BID), ("final_best_ask", ST_BEST_ASK)):
        result[key] = None if st[index] == EMPTY else str(((st[ST_BASE] + st[index]) * tick).normalize())
    return result


def verify_capture(paths: Sequence[Path]) -> dict:
    return replay_tables(parse_capture(paths))

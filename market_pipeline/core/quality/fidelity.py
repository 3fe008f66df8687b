"""Fidelity of the vendor-built books against a raw Binance capture of the same instrument-day.

Capture files are found in PIPELINE_CAPTURE_DIR by name, `binance_{spot,usdm,coinm}_{pair}_{YYYYMMDD}*`
(the naming `sources/capture.py` reads). The capture is replayed exactly with the exchange's
sync rules (`book/capture_replay.py`); its bookTicker stream is the oracle the replay is
checked against, so it stands for the capture-built top of book. Both tops are sampled on a
common grid over the capture's span (last value at or before each grid time) and compared:
- spread in ticks, and
- mid-price return in bps between consecutive grid times,
with a two-sample Kolmogorov-Smirnov test each.
"""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path

import numpy as np
import polars as pl

from market_pipeline.vendors.binance.verify import replay_tables
from market_pipeline.core.quality.ks import ks_2samp
from market_pipeline.settings import Instrument
from market_pipeline.vendors.binance.capture_format import LAKE_EXCHANGES, lake_instrument, parse_capture

FIDELITY_COLUMNS: dict[str, pl.DataType] = {
    "capture_files": pl.Int64(),
    "capture_ticker_checks": pl.Int64(),
    "capture_ticker_agreement_share": pl.Float64(),
    "capture_samples": pl.Int64(),
    "ks_spread_statistic": pl.Float64(),
    "ks_spread_pvalue": pl.Float64(),
    "ks_mid_return_statistic": pl.Float64(),
    "ks_mid_return_pvalue": pl.Float64(),
}


def capture_files(capture_dir: Path | None, instrument: Instrument, day: dt.date) -> list[Path]:
    """The capture files of one instrument-day, in name (time) order."""
    if capture_dir is None or not capture_dir.is_dir():
        return []
    found = []
    stamp = day.strftime("%Y%m%d")
    for path in sorted(capture_dir.iterdir()):
        parts = path.name.lower().split("_")
        if len(parts) < 4 or parts[0] != "binance" or parts[1] not in LAKE_EXCHANGES:
            continue
        if not parts[3].startswith(stamp):
            continue
        try:
            if lake_instrument(parts[1], parts[2].upper()) == (instrument.exchange, instrument.symbol):
                found.append(path)
        except ValueError:
            continue  # a pair we cannot split is not this instrument
    return found


def _sample(frame: pl.DataFrame, grid: pl.DataFrame) -> pl.DataFrame:
    return grid.join_asof(frame.sort("received_time"), on="received_time", strategy="backward").drop_nulls()


def _series(sampled: pl.DataFrame, tick: float) -> tuple[np.ndarray, np.ndarray]:
    bid, ask = sampled["bid"].to_numpy(), sampled["ask"].to_numpy()
    spread = (ask - bid) / tick
    mid = (ask + bid) / 2
    returns = np.diff(np.log(mid)) * 1e4
    return spread, returns


def capture_fidelity(
    files: list[Path], instrument: Instrument, books: pl.DataFrame, sample_ms: int
) -> dict[str, object]:
    """FIDELITY_COLUMNS for one instrument-day; `books` is the rebuilt touch (read_books_touch)."""
    tables = parse_capture(files)
    # The replay infers the capture's own grid: captures may carry sizes finer than the configured lot.
    replay = replay_tables(tables)
    checks = int(replay["ticker_checks"])
    result: dict[str, object] = dict.fromkeys(FIDELITY_COLUMNS)
    result["capture_files"] = len(files)
    result["capture_ticker_checks"] = checks
    result["capture_ticker_agreement_share"] = (
        1 - int(replay["ticker_mismatches"]) / checks if checks else None
    )
    ticker = tables.book_ticker.select(
        "received_time", pl.col("bid_price").alias("bid"), pl.col("ask_price").alias("ask")
    )
    vendor = books.filter("synced").select(
        "received_time", pl.col("bid_0_price").alias("bid"), pl.col("ask_0_price").alias("ask")
    ).drop_nulls()
    if ticker.is_empty() or vendor.is_empty():
        return result
    step = sample_ms * 1_000_000
    start = max(int(ticker["received_time"].min()), int(vendor["received_time"].min()))
    end = min(int(ticker["received_time"].max()), int(vendor["received_time"].max()))
    first = math.ceil(start / step) * step
    if end < first + step:
        return result
    grid = pl.DataFrame({"received_time": np.arange(first, end + 1, step, dtype=np.int64)})
    tick = float(instrument.tick_size)
    v_spread, v_ret = _series(_sample(vendor, grid), tick)
    c_spread, c_ret = _series(_sample(ticker, grid), tick)
    result["capture_samples"] = int(min(len(v_spread), len(c_spread)))
    if len(v_spread) and len(c_spread):
        ks = ks_2samp(v_spread, c_spread)
        result["ks_spread_statistic"], result["ks_spread_pvalue"] = ks.statistic, ks.pvalue
    if len(v_ret) and len(c_ret):
        ks = ks_2samp(v_ret, c_ret)
        result["ks_mid_return_statistic"], result["ks_mid_return_pvalue"] = ks.statistic, ks.pvalue
    return result

"""Fidelity of an instrument-day's books rebuilt from a raw Binance capture, from the rebuild's own table.

The capture rebuild (`vendors/binance/rebuild.py`, through its `fidelity_table.py`) writes, beside
the day's books, a small Parquet table (`lake/paths.capture_fidelity_dir`): the top of book of its
in-sync rows and of the capture's bookTicker stream (the exchange's own top, the oracle the replay
is checked against), both sampled on a common grid (`checks.fidelity_sample_interval_ms`, last
value at or before each grid time) in ticks, and in the file's metadata the replay's figures:
bookTicker checks and mismatches, gaps, unsynced rows, capture files. Nothing is re-parsed here,
so the figures are those of the books. The two tops are compared by
- spread in ticks, and
- mid-price return in bps between consecutive grid times,
with a two-sample Kolmogorov-Smirnov test each. Without the table (books not rebuilt from a
capture) every figure is null.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl

from market_pipeline.core.lake import parquet_io
from market_pipeline.core.quality.ks import ks_2samp

# Key of the rebuild's figures in the table's Parquet metadata.
METADATA_KEY = b"market_pipeline"

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


def read_fidelity_table(path: Path) -> tuple[pl.DataFrame, dict[str, object]] | None:
    """The samples and the rebuild's figures, None when the rebuild wrote no table."""
    if not path.is_file():
        return None
    table = parquet_io.read_table(path)
    figures = json.loads((table.schema.metadata or {}).get(METADATA_KEY, b"{}"))
    return pl.from_arrow(table.replace_schema_metadata(None)), figures  # type: ignore[return-value]


def _series(bid: np.ndarray, ask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Spread in ticks and mid return in bps from prices in ticks."""
    bid, ask = bid.astype(np.float64), ask.astype(np.float64)
    spread = ask - bid
    returns = np.diff(np.log((ask + bid) / 2)) * 1e4
    return spread, returns


def capture_fidelity(path: Path) -> dict[str, object]:
    """FIDELITY_COLUMNS for one instrument-day from the rebuild's fidelity table at `path`."""
    result: dict[str, object] = dict.fromkeys(FIDELITY_COLUMNS)
    found = read_fidelity_table(path)
    if found is None:
        return result
    samples, figures = found
    checks = figures.get("ticker_checks")
    result["capture_files"] = figures.get("capture_files")
    result["capture_ticker_checks"] = checks
    if checks:
        result["capture_ticker_agreement_share"] = 1 - int(figures["ticker_mismatches"]) / int(checks)  # type: ignore[call-overload]
    if samples.is_empty():
        return result
    result["capture_samples"] = samples.height
    b_spread, b_ret = _series(samples["book_bid_ticks"].to_numpy(), samples["book_ask_ticks"].to_numpy())
    t_spread, t_ret = _series(samples["ticker_bid_ticks"].to_numpy(), samples["ticker_ask_ticks"].to_numpy())
    ks = ks_2samp(b_spread, t_spread)
    result["ks_spread_statistic"], result["ks_spread_pvalue"] = ks.statistic, ks.pvalue
    if len(b_ret) and len(t_ret):
        ks = ks_2samp(b_ret, t_ret)
        result["ks_mid_return_statistic"], result["ks_mid_return_pvalue"] = ks.statistic, ks.pvalue
    return result

"""The day statistics of a raw table-day, as stored beside the day and read back.

The raw import keeps small figures of every instrument-day in its one pass over the rows
(`day_stats_builder.DayStatsBuilder`): counts, per-hour clock-skew histograms, sequence-gap
events, a capture's chain breaks and a few sample rows per kind of problem. `DayStats.write`
stores them as small Parquet tables beside the day (`lake/stats/{table}/exchange=X/symbol=Y/dt=D/`),
and the raw checks and the quality measures read those instead of the day itself
(docs/data-formats.md, "Day statistics").

The skew histogram's buckets keep `skew_pass.SKEW_SIGNIFICANT_BITS` significant bits of |skew| in
ns: exact below 1.024 us, within 0.1 % (half a bucket) above; it locates the order statistics the
exact quantiles need (`skew.SkewQuantiles`). Minimum, maximum, counts and the negative share are exact.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from market_pipeline.core.lake import parquet_io, storage
from market_pipeline.core.lake.files import write_text_atomic
from market_pipeline.core.lake.parquet_io import write_lake_parquet_atomic
from market_pipeline.core.quality.sequence import GAP_SCHEMA

SAMPLE_ROWS = 10  # rows kept per kind of problem (check metadata shows at most this many)
STATS_VERSION = 2  # 2: chain_breaks

HOURLY_SCHEMA = {
    "hour": pl.Int32,
    "rows": pl.Int64,
    "messages": pl.Int64,
    "skew_min_ns": pl.Int64,
    "skew_max_ns": pl.Int64,
    "skew_negative": pl.Int64,
}
HISTOGRAM_SCHEMA = {"hour": pl.Int32, "bucket_ns": pl.Int64, "width_ns": pl.Int64, "count": pl.Int64}
PRECISION_SCHEMA = {"column": pl.String, "grid": pl.String, "off_grid": pl.Int64, "precision_loss": pl.Int64}
SAMPLE_SCHEMA = {
    "kind": pl.String,
    "row": pl.Int64,  # row in the lake file (after dropped duplicates)
    "received_time": pl.Int64,
    "origin_time": pl.Int64,
    "sequence_number": pl.Int64,
    "trade_id": pl.String,
    "column": pl.String,
    "value": pl.Float64,
    "steps": pl.Float64,
    "skew_ns": pl.Int64,
    "previous": pl.Int64,  # out of order: the running maximum it fell below
    "dropped": pl.Boolean,
}
EVENT_SCHEMA = {name: GAP_SCHEMA[name] for name in list(GAP_SCHEMA)[:6]}  # gaps before repair
OUTSIDE_SCHEMA = {"minutes_outside_day": pl.Int64, "rows": pl.Int64}

OFF_GRID, PRECISION_LOSS, SKEW = "off_grid", "precision_loss", "skew"
DUPLICATE, CONFLICTING_TRADE_ID = "duplicate", "conflicting_trade_id"
OUT_OF_ORDER_RECEIVED, OUT_OF_ORDER_TRADE_ID = "out_of_order_received", "out_of_order_trade_id"

TABLE_FILES = ("hourly", "skew_histogram", "precision", "samples", "gaps", "origin_outside_day", "chain_breaks")
# The deltas' exact skew quantiles, stored beside their statistics by the first measure that
# needs them (`skew.day_quantiles`), tagged with the deltas file and these statistics.
SKEW_QUANTILES_FILE = "skew_quantiles.parquet"


def _empty(schema: dict[str, pl.DataType]) -> pl.DataFrame:
    return pl.DataFrame(schema=schema)


def _bucket_values(bucket: np.ndarray, width: np.ndarray) -> np.ndarray:
    """A bucket's representative skew (ns): its middle, exact for one-ns buckets."""
    middle = np.abs(bucket) + (width - 1) / 2
    return np.where(bucket < 0, -middle, middle)


def histogram_count(histogram: pl.DataFrame, above_ns: float | None = None, below_ns: float | None = None) -> int:
    """Skews counted by bucket representative: > above_ns or < below_ns."""
    if histogram.is_empty():
        return 0
    values = _bucket_values(histogram["bucket_ns"].to_numpy(), histogram["width_ns"].to_numpy())
    counts = histogram["count"].to_numpy()
    hit = np.zeros(len(values), dtype=bool)
    if above_ns is not None:
        hit |= values > above_ns
    if below_ns is not None:
        hit |= values < below_ns
    return int(counts[hit].sum())


@dataclass
class DayStats:
    """The statistics of one raw table-day: a one-row summary and small tables."""

    summary: dict[str, object]
    hourly: pl.DataFrame = field(default_factory=lambda: _empty(HOURLY_SCHEMA))
    skew_histogram: pl.DataFrame = field(default_factory=lambda: _empty(HISTOGRAM_SCHEMA))
    precision: pl.DataFrame = field(default_factory=lambda: _empty(PRECISION_SCHEMA))
    samples: pl.DataFrame = field(default_factory=lambda: _empty(SAMPLE_SCHEMA))
    gaps: pl.DataFrame = field(default_factory=lambda: _empty(EVENT_SCHEMA))
    origin_outside_day: pl.DataFrame = field(default_factory=lambda: _empty(OUTSIDE_SCHEMA))
    # A capture's deltas: the breaks of the exchange's update-id chain (`chain.py`; none otherwise).
    chain_breaks: pl.DataFrame = field(default_factory=lambda: _empty(EVENT_SCHEMA))

    def write(self, directory: Path) -> None:
        """summary.json plus one Parquet file per table, each written atomically."""
        for name in TABLE_FILES:
            write_lake_parquet_atomic(getattr(self, name), directory / f"{name}.parquet")
        # The summary last: a reader that finds it finds the tables of the same import.
        write_text_atomic(directory / "summary.json", json.dumps(self.summary, indent=2, sort_keys=True) + "\n")

    @classmethod
    def read(cls, directory: Path) -> DayStats | None:
        summary_path = directory / "summary.json"
        if not summary_path.is_file():
            return None
        summary = json.loads(storage.readable(summary_path).read_text())  # inside a step: its local copy
        if summary.get("version") != STATS_VERSION:
            return None
        try:
            tables = {name: parquet_io.read_frame(directory / f"{name}.parquet") for name in TABLE_FILES}
        except (FileNotFoundError, pl.exceptions.PolarsError, OSError):
            return None
        return cls(summary, **tables)

    def matches(self, data_file: Path) -> bool:
        """Whether these statistics describe `data_file` as it is now (rows and bytes)."""
        if not data_file.is_file():
            return False
        rows = parquet_io.num_rows(data_file)
        return self.summary.get("rows") == rows and self.summary.get("data_bytes") == data_file.stat().st_size

    def samples_of(self, kind: str) -> pl.DataFrame:
        return self.samples.filter(pl.col("kind") == kind)

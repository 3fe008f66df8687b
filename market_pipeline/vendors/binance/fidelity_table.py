"""The capture rebuild's fidelity table (`capture_fidelity_dir`), which `core/quality/fidelity.py`
reads: the tops of book of the in-sync rows written and of the bookTicker stream, each sampled on a
common grid (the last top at or before each grid time) over the span both cover, in ticks, and in
the file's metadata the replay's own figures.

Both sides are reduced as they come (`GridTops`): each grid time keeps only the last top before
it, so the table costs the day's grid times (86,400 at 1 s), not its rows or its tickers.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa

from market_pipeline.core.lake import parquet_io
from market_pipeline.core.lake.files import atomic_path
from market_pipeline.core.quality.fidelity import METADATA_KEY

FIDELITY_SCHEMA = pa.schema(
    [
        ("received_time", pa.int64()),
        ("book_bid_ticks", pa.int64()),
        ("book_ask_ticks", pa.int64()),
        ("ticker_bid_ticks", pa.int64()),
        ("ticker_ask_ticks", pa.int64()),
    ]
)
DAY_NS = 86_400 * 1_000_000_000
_NONE = np.iinfo(np.int64).min  # no top in a grid step yet


class GridTops:
    """The last (bid, ask) at or before each time of a grid of `step_ns` over one UTC day, from
    tops handed in batches in any order (of equal receive times, the one handed last).

    Grid step k (grid time k * step_ns) keeps the top received last in ((k - 1) * step_ns,
    k * step_ns]; the last top at or before a grid time is then that of the last step up to it
    which has one.
    """

    def __init__(self, what: str, day_start: int, step_ns: int) -> None:
        self.what = what
        self.day_start = day_start
        self.step = step_ns
        self.first_step = -(-day_start // step_ns)  # the first grid time at or after midnight
        steps = -(-(day_start + DAY_NS - 1) // step_ns) - self.first_step + 1
        self.recv = np.full(steps, _NONE, np.int64)
        self.bid = np.zeros(steps, np.int64)
        self.ask = np.zeros(steps, np.int64)
        self.lowest: int | None = None  # the earliest receive time handed
        self.highest: int | None = None

    def add(self, recv: np.ndarray, bid: np.ndarray, ask: np.ndarray) -> None:
        if not len(recv):
            return
        lowest, highest = int(recv.min()), int(recv.max())
        if lowest < self.day_start or highest >= self.day_start + DAY_NS:
            outside = lowest if lowest < self.day_start else highest
            raise ValueError(f"{self.what}: received_time {outside} is outside the day starting at {self.day_start}")
        self.lowest = lowest if self.lowest is None else min(self.lowest, lowest)
        self.highest = highest if self.highest is None else max(self.highest, highest)
        order = np.lexsort((np.arange(len(recv)), recv))  # by receive time, then as handed
        steps = -(-recv[order] // self.step) - self.first_step
        last_of_step = np.r_[steps[1:] != steps[:-1], True]
        last, step = order[last_of_step], steps[last_of_step]  # the last top of each grid step, and it
        later = recv[last] >= self.recv[step]
        step, last = step[later], last[later]
        self.recv[step] = recv[last]
        self.bid[step] = bid[last]
        self.ask[step] = ask[last]

    def at(self, times: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(has a top, bid, ask) at or before each of `times` (grid times of the day)."""
        filled = np.where(self.recv != _NONE, np.arange(len(self.recv)), -1)
        latest = np.maximum.accumulate(filled)[times // self.step - self.first_step]
        return latest >= 0, self.bid[latest], self.ask[latest]


def fidelity_table(book: GridTops, ticker: GridTops) -> pl.DataFrame:
    """Both tops at each grid time over the span both sides cover (FIDELITY_SCHEMA's columns)."""
    table = pl.DataFrame(schema=pl.Schema(FIDELITY_SCHEMA))
    if book.lowest is None or ticker.lowest is None or book.highest is None or ticker.highest is None:
        return table
    step = book.step
    start, end = max(book.lowest, ticker.lowest), min(book.highest, ticker.highest)
    first = -(-start // step) * step
    if end < first + step:
        return table
    times = np.arange(first, end + 1, step, dtype=np.int64)
    has_book, book_bid, book_ask = book.at(times)
    has_ticker, ticker_bid, ticker_ask = ticker.at(times)
    both = has_book & has_ticker
    columns = [times, book_bid, book_ask, ticker_bid, ticker_ask]
    return pl.DataFrame({name: column[both] for name, column in zip(FIDELITY_SCHEMA.names, columns, strict=True)})


def write_fidelity(path: Path, book: GridTops, ticker: GridTops, figures: dict[str, object]) -> None:
    """The fidelity table of `book` (the in-sync rows' tops) and `ticker` (the day's bookTickers'),
    `figures` in its metadata."""
    arrow = fidelity_table(book, ticker).to_arrow().cast(FIDELITY_SCHEMA)
    arrow = arrow.replace_schema_metadata({METADATA_KEY: json.dumps(figures)})
    with atomic_path(path) as tmp:
        parquet_io.write_table(arrow, tmp)

"""Book shape at vendor snapshots: one row per books row written at a vendor snapshot (`trigger =
'snapshot'`) with both touch prices: its hour, spread in ticks and depth near mid in lots.

`pipeline_metrics` aggregates these rows (`microstructure.py`). The book rebuild makes them from
its int64 output buffers as it writes the books (`book_writer.BookWriter` hands them to a
`ShapeFile`), and the books stage
stores them beside the day (`lake/stats/books/exchange=X/symbol=Y/dt=D/shape.parquet`, ~7 MB for
864,000 snapshots), tagged with the rows and bytes of the books file they describe. The metrics
read that file when it matches the books file, and otherwise compute the same rows from the
books' level columns (`microstructure._snapshot_shape`, e.g. for books written before this
file existed). Both paths go through `shape_rows`, so the figures are identical.

Depth counts the levels priced within N bps of mid, in integers:

    |price - mid| / mid <= N / 10_000   <=>   |2 p - (b0 + a0)| * 10_000 <= N (b0 + a0)   (in ticks)

with the bounds rounded as the former SQL did (DuckDB's integer division, toward zero).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
from numba import njit

from market_pipeline.core.lake.derived import read_derived, write_derived

DEPTH_BPS = (5, 10, 25)
_HOUR_NS = 3_600 * 1_000_000_000
_TAG = b"books"  # the shape file's tag names the books file it was made with (`derived.py`)
SHAPE_SCHEMA = pa.schema(
    [("hour", pa.int64()), ("spread_ticks", pa.int64()), *[(f"depth_{n}bps_lots", pa.int64()) for n in DEPTH_BPS]]
)


@njit(cache=True, nogil=True)
def _toward_zero(numerator, denominator):
    """DuckDB's integer `//` (rounds toward zero)."""
    quotient = abs(numerator) // denominator
    return -quotient if numerator < 0 else quotient


@njit(cache=True, nogil=True)
def _shape_kernel(rows, recv, sides, day_start, bps, hour, spread, depth, missing):
    """Row k of the output from row rows[k] of the input: its hour, spread and, per bps[j], in
    depth[j, k] the lots of the levels priced within bps[j] of mid as the former SQL's `CASE WHEN
    tick BETWEEN lo AND hi THEN lots ELSE 0` (lo, hi with DuckDB's integer division toward zero);
    missing[j, k] when such a level has no size (the SQL sum was NULL).

    `sides` is (bid ticks, bid price valid, bid lots, bid size valid, ask ...), each (levels, rows):
    column-major, as the rebuild's buffers hold them. `depth` comes in zeroed."""
    bid_p, bid_pv, bid_s, bid_sv, ask_p, ask_pv, ask_s, ask_sv = sides
    n_bps = bps.shape[0]
    low = np.empty((n_bps, rows.shape[0]), np.int64)
    high = np.empty((n_bps, rows.shape[0]), np.int64)
    for k in range(rows.shape[0]):
        r = rows[k]
        m2 = bid_p[0, r] + ask_p[0, r]
        hour[k] = min(max(_toward_zero(recv[r] - day_start, _HOUR_NS), 0), 23)
        spread[k] = ask_p[0, r] - bid_p[0, r]
        for j in range(n_bps):
            low[j, k] = -_toward_zero(-m2 * (10_000 - bps[j]), 20_000)
            high[j, k] = _toward_zero(m2 * (10_000 + bps[j]), 20_000)
    # Level by level over the rows: the inputs are column-major, so this reads them in order.
    for prices, price_valid, sizes, size_valid in ((bid_p, bid_pv, bid_s, bid_sv), (ask_p, ask_pv, ask_s, ask_sv)):
        for c in range(prices.shape[0]):
            for k in range(rows.shape[0]):
                r = rows[k]
                if not price_valid[c, r]:
                    continue
                for j in range(n_bps):
                    if low[j, k] <= prices[c, r] <= high[j, k]:
                        if size_valid[c, r]:
                            depth[j, k] += sizes[c, r]
                        else:
                            missing[j, k] = True


def shape_rows(rows: np.ndarray, received_time: np.ndarray, sides: tuple[np.ndarray, ...], day_start: int) -> pa.Table:
    """The shape rows of input rows `rows`, snapshot rows with both touch prices. `sides` holds the
    bid ticks, their validity, the bid lots, their validity, then the same of the asks, each
    (levels, input rows) from the touch outwards."""
    n = len(rows)
    bps = np.array(DEPTH_BPS, np.int64)
    hour, spread = np.empty(n, np.int64), np.empty(n, np.int64)
    depth, missing = np.zeros((len(bps), n), np.int64), np.zeros((len(bps), n), np.bool_)
    _shape_kernel(rows, received_time, sides, day_start, bps, hour, spread, depth, missing)
    columns = [hour, spread, *[pa.array(depth[j], mask=missing[j]) for j in range(len(DEPTH_BPS))]]
    return pa.Table.from_arrays(columns, schema=SHAPE_SCHEMA)


class ShapeFile:
    """The shape rows of the snapshot rows a rebuild writes (its `book_writer.SnapshotRowsSink`),
    stored at `path` once the books file is complete."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._parts: list[pa.Table] = []

    def add(self, rows: np.ndarray, received_time: np.ndarray, sides: tuple[np.ndarray, ...], day_start: int) -> None:
        self._parts.append(shape_rows(rows, received_time, sides, day_start))

    def table(self) -> pa.Table:
        """The shape rows of every batch so far, in order."""
        return pa.concat_tables(self._parts) if self._parts else SHAPE_SCHEMA.empty_table()

    def write(self, books: Path) -> None:
        write_shape(self.table(), self.path, books)


def write_shape(shape: pa.Table, path: Path, books: Path) -> None:
    """Store `shape` at `path`, atomically, tagged with the books file it describes."""
    write_derived(shape, path, books, _TAG)


def read_shape(path: Path, books: Path) -> pa.Table | None:
    """The shape rows stored for `books`, or None when there are none or they describe another
    books file (rewritten since, or a crash between the two writes)."""
    return read_derived(path, books, _TAG)

"""A `book_snapshot_25` file's lines read in numba (`line_blocks` says when and why), in the one
shape Tardis writes them:

    exchange,symbol,timestamp,local_timestamp,asks[0].price,asks[0].amount,bids[0].price,...

with every level kept (the lake's first 20 a side) there, a positive price and an amount, read
into columns; the levels past them are numbers or empty (a book shallower than 25 levels), which
Arrow's reader does not read either. A snapshot with a kept level empty is Arrow's to read. On
the bench day's file (864 k rows, 675 MB of text) its way to the cache table took 3.0-3.9 CPU-s
against 3.7-3.8 with Arrow's reader (2.2-2.7 s against 2.3-2.4 s of wall: converting and writing
the 83 columns is most of it).
"""

from __future__ import annotations

from pathlib import Path

import numba as nb
import numpy as np
import polars as pl

from market_pipeline.core.borrowed_arrays import borrowed
from market_pipeline.vendors.tardis.line_blocks import COMMA, NEWLINE, LineBlocks, field_bytes, line_head
from market_pipeline.vendors.tardis.number_text import POWERS, scientific


@nb.njit(cache=True, nogil=True)
def _decode(text, exchange, symbol, powers, values_read, timestamp, local, kept):
    """Read `text` (whole lines of `values_read` level values each: price, amount, ...) into the
    arrays from row 0, the first `kept.shape[0]` values of a line into `kept[:, row]`; (rows read,
    where the first line not in the shape starts: len(text) when every one is)."""
    args = borrowed((text, exchange, symbol, powers, timestamp, local, kept))
    text, exchange, symbol, powers, timestamp, local, kept = args
    end = text.shape[0]
    columns = kept.shape[0]
    p = r = 0
    while p < end:
        line = p
        p, t, lt = line_head(text, p, end, exchange, symbol)
        for k in range(values_read):
            if p < 0:
                break
            separator = NEWLINE if k == values_read - 1 else COMMA
            if k >= columns and p < end and text[p] == separator:  # a level not kept may be absent
                p += 1
                continue
            p, value = scientific(text, p, end, powers)
            if p < 0 or p >= end or text[p] != separator or (k < columns and k % 2 == 0 and value <= 0.0):
                p = -1
                break
            if k < columns:
                kept[k, r] = value
            p += 1
        if p < 0:
            return r, line
        timestamp[r], local[r] = t, lt
        r += 1
    return r, end


def snapshot_lines(path: Path, header: list[str], kept: list[str], exchange: str, symbol: str) -> LineBlocks:
    """The snapshot file's rows as frames of timestamp, local_timestamp and the `kept` level
    columns (the first of the `header`'s, csv_format's `snapshot_columns`), as long as its lines
    are in the shape."""
    exchange_bytes, symbol_bytes = field_bytes(exchange), field_bytes(symbol)
    values_read = len(header) - 4
    # The shortest line: 1-digit times and values, the levels not kept empty.
    shortest = len(exchange_bytes) + len(symbol_bytes) + len("1,1,") + 2 * len(kept) + values_read - len(kept)

    def decode(text: np.ndarray) -> tuple[pl.DataFrame, bool]:
        most = len(text) // shortest
        timestamp, local = np.empty(most, dtype=np.int64), np.empty(most, dtype=np.int64)
        values = np.empty((len(kept), most), dtype=np.float64)  # a column a row: each column's values contiguous
        rows, stop = _decode(text, exchange_bytes, symbol_bytes, POWERS, values_read, timestamp, local, values)
        series = [pl.Series("timestamp", timestamp[:rows]), pl.Series("local_timestamp", local[:rows])]
        series += [pl.Series(name, values[k, :rows]) for k, name in enumerate(kept)]
        return pl.DataFrame(series), stop == len(text)

    return LineBlocks(path, header, decode)

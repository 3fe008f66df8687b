"""An `incremental_book_L2` file's lines read in numba (`line_blocks` says when and why), in the one
shape Tardis writes them:

    exchange,symbol,timestamp,local_timestamp,is_snapshot,side,price,amount

with `true` or `false`, `bid` or `ask`, a positive price and an amount. On the bench day's L2 file
(34 M rows, 2.6 GB of text) the way to its cache table took 4.8-5.0 s (7.0-7.2 CPU-s) against
6.5 s (10.1-10.5 CPU-s) with Arrow's reader and the checks of its rows (3 runs each, alternating).
"""

from __future__ import annotations

from pathlib import Path

import numba as nb
import numpy as np
import polars as pl

from market_pipeline.core.borrowed_arrays import borrowed
from market_pipeline.core.reused_arrays import ReusedArrays
from market_pipeline.vendors.tardis.line_blocks import COMMA, NEWLINE, LineBlocks, field_bytes, line_head, literal
from market_pipeline.vendors.tardis.number_text import POWERS, scientific

_TRUE, _FALSE = np.frombuffer(b"true,", dtype=np.uint8), np.frombuffer(b"false,", dtype=np.uint8)
_BID, _ASK = np.frombuffer(b"bid,", dtype=np.uint8), np.frombuffer(b"ask,", dtype=np.uint8)
_SHORTEST_REST = b"1,1,true,bid,1,0\n"  # the shortest line's fields after the symbol
BLOCK_ARRAYS = 36  # six columns a block: the block decoded, those queued and those a row group holds


@nb.njit(cache=True, nogil=True, inline="always")
def _row(text, p, end, exchange, symbol, powers):
    """(past the line, timestamp, local_timestamp, is_snapshot, side is bid, price, amount) of the
    line at p; past is -1 when the line is not in the shape."""
    p, timestamp, local = line_head(text, p, end, exchange, symbol)
    snapshot = bid = False
    if p >= 0:
        past = literal(text, p, end, _TRUE)
        snapshot = past >= 0
        p = past if snapshot else literal(text, p, end, _FALSE)
    if p >= 0:
        past = literal(text, p, end, _BID)
        bid = past >= 0
        p = past if bid else literal(text, p, end, _ASK)
    price = amount = 0.0
    if p >= 0:
        p, price = scientific(text, p, end, powers)
    if p >= 0 and (p >= end or text[p] != COMMA or price <= 0.0):
        p = -1
    if p >= 0:
        p, amount = scientific(text, p + 1, end, powers)
    if p >= 0 and (p >= end or text[p] != NEWLINE):
        p = -1
    return (p + 1 if p >= 0 else -1), timestamp, local, snapshot, bid, price, amount


@nb.njit(cache=True, nogil=True)
def _decode(text, exchange, symbol, powers, timestamp, local, snapshot, bid, price, amount):
    """Read `text` (whole lines) into the arrays from row 0; (rows read, where the first line not
    in the shape starts: len(text) when every one is)."""
    args = borrowed((text, exchange, symbol, powers, timestamp, local, snapshot, bid, price, amount))
    text, exchange, symbol, powers, timestamp, local, snapshot, bid, price, amount = args
    end = text.shape[0]
    p = r = 0
    while p < end:
        past, t, lt, s, b, pr, a = _row(text, p, end, exchange, symbol, powers)
        if past < 0:
            return r, p
        timestamp[r], local[r], snapshot[r], bid[r], price[r], amount[r] = t, lt, s, b, pr, a
        p = past
        r += 1
    return r, end


def l2_lines(path: Path, header: list[str], exchange: str, symbol: str) -> LineBlocks:
    """The L2 file's rows as frames of timestamp, local_timestamp, is_snapshot, side_is_bid, price
    and amount, as long as its lines are in the shape (`header`: csv_format's L2_COLUMNS)."""
    exchange_bytes, symbol_bytes = field_bytes(exchange), field_bytes(symbol)
    shortest = len(exchange_bytes) + len(symbol_bytes) + len(_SHORTEST_REST)

    # The blocks' columns live on in the frames handed on (polars shares their memory) until the
    # cache table is written: `ReusedArrays` gives a block the memory of blocks already written.
    arrays = ReusedArrays(BLOCK_ARRAYS)

    def decode(text: np.ndarray) -> tuple[pl.DataFrame, bool]:
        # At most a row a shortest line: arrays are only touched (given pages) as far as they are
        # filled, and counting the newlines instead took a pass and a block-sized mask.
        most = len(text) // shortest
        timestamp, local = arrays.empty(most, np.int64), arrays.empty(most, np.int64)
        snapshot, bid = arrays.empty(most, np.bool_), arrays.empty(most, np.bool_)
        price, amount = arrays.empty(most, np.float64), arrays.empty(most, np.float64)
        rows, stop = _decode(text, exchange_bytes, symbol_bytes, POWERS, timestamp, local, snapshot, bid, price, amount)
        columns = {
            "timestamp": timestamp,
            "local_timestamp": local,
            "is_snapshot": snapshot,
            "side_is_bid": bid,
            "price": price,
            "amount": amount,
        }
        return pl.DataFrame([pl.Series(name, values[:rows]) for name, values in columns.items()]), stop == len(text)

    return LineBlocks(path, header, decode)

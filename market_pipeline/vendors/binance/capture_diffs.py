"""A chunk's depth diffs decoded in one pass of numba, when every one of them is in the exact shape
Binance sends: `{"stream":"<s>@depth..","data":{"e":"depthUpdate","E":..,"T":..,"s":"..","U":..,
"u":..,"pu":..,"b":[["<price>","<size>"],..],"a":[..]}}`, compact, fields in any order but the
bids before the asks, each at most once (`T` and `pu` are futures'), integers in JSON's spelling
within int64, strings without escapes, prices and sizes plain decimals (`12`, `0.0100`) of at most
15 significant digits.

Each value is read as the line path reads it (`capture_json`). Whatever else a diff holds (a
space, an escape, an exponent, a null, another field, a duplicated one) sends the chunk to Arrow's
reader (`capture_bulk._parse`), which hands what it does not read to the line path: this path only
ever reads lines the others read, the same way.

Why not a library: per million lines of the bench day's capture (870 k diffs, 174 MB), Arrow's
JSON reader took 2.5-3.1 CPU-s to give the levels as strings, and their order and cast 1.2 more;
polars' NDJSON reader 8.8-9.6 s, msgspec 13-15 s into typed structs. This pass takes about 0.6 s
(the scan of `capture_scan` before it 0.25 s).
"""

from __future__ import annotations

from dataclasses import dataclass

import numba as nb
import numpy as np

from market_pipeline.core.borrowed_arrays import borrowed
from market_pipeline.core.reused_arrays import ReusedArrays
from market_pipeline.vendors.binance.capture_json import (
    COMMA,
    DATA_KEY,
    END_LIST,
    LIST,
    POWERS,
    data_end,
    data_start,
    decimal,
    integer,
    is_pu,
    key_end,
    message_end,
    same_symbol,
    string_end,
    value_end,
)

# The fields read, by their one- or two-letter names: a bit each, to find the duplicated and the missing.
_E, _T, _S, _U_FIRST, _U, _PU, _B, _A, _EVENT_TYPE = (1 << k for k in range(9))


def _one_letter_fields() -> np.ndarray:
    """The bit of each field named by one letter, indexed by the letter's byte ("pu" is the one of two)."""
    table = np.zeros(128, dtype=np.int64)
    for letter, bit in zip("ETsUubae", (_E, _T, _S, _U_FIRST, _U, _B, _A, _EVENT_TYPE), strict=True):
        table[ord(letter)] = bit
    return table


_ONE_LETTER = _one_letter_fields()
_REQUIRED = _E | _S | _U_FIRST | _U | _B | _A

# A diff's fields, and where its bids and its asks end among the level rows: a column a diff.
_EVENT, _FIRST, _FINAL, _PREV, _BIDS_END, _ASKS_END = range(6)
# The level rows' integer columns, in this order: the diff's E, receive time, u, U, pu and line_no.
LEVEL_INTEGERS = ("E", "received_time", "u", "U", "pu", "line_no")
_LEVEL_INTEGER_ROWS = len(LEVEL_INTEGERS)


@dataclass(frozen=True)
class DiffLevels:
    """The level rows of a chunk's diffs: each diff's bids, then its asks, in line order."""

    integers: np.ndarray  # int64 [len(LEVEL_INTEGERS), n]; pu 0 where the diff has none
    prices: np.ndarray  # float64 [n]
    sizes: np.ndarray  # float64 [n]
    side_is_bid: np.ndarray  # bool [n]
    has_pu: np.ndarray  # bool, a diff each: whether it carries `pu` (futures)
    symbol: bytes  # the diffs' one `s`


def decode_diffs(
    text: np.ndarray,
    ends: np.ndarray,
    bodies: np.ndarray,
    rows: np.ndarray,
    received: np.ndarray,
    line_nos: np.ndarray,
    arrays: ReusedArrays,
) -> DiffLevels | None:
    """The level rows of the diffs on lines `rows` of a `LineChunk` (`bodies`: where each line's
    message starts, from `capture_scan`; `received`, `line_nos`: each diff's). None unless every
    one is in the shape above and they name one symbol. Its arrays come from `arrays` (those of
    the calling thread: the tables keep the level rows')."""
    head = np.empty((6, len(rows)), dtype=np.int64)
    has_pu = np.empty(len(rows), dtype=np.bool_)
    # Price, size, price, size, ...: a level takes 9 bytes at least. Read here first, then copied
    # to arrays of their own length, which the tables keep: the pages past those read stay untouched.
    values = arrays.empty(2 * (len(text) // 9 + 1), np.float64)
    symbol = np.zeros(2, dtype=np.int64)  # start and end in `text` of the first diff's symbol
    if not _decode(text, ends, bodies, rows, head, has_pu, values, symbol, DATA_KEY, _ONE_LETTER, POWERS):
        return None
    count = int(head[_ASKS_END, -1]) if len(rows) else 0
    integers = arrays.empty((_LEVEL_INTEGER_ROWS, count), np.int64)
    prices, sizes = arrays.empty(count, np.float64), arrays.empty(count, np.float64)
    side_is_bid = arrays.empty(count, np.bool_)
    _spread(head, values, received, line_nos, integers, prices, sizes, side_is_bid)
    return DiffLevels(integers, prices, sizes, side_is_bid, has_pu, text[symbol[0] : symbol[1]].tobytes())


@nb.njit(cache=True, nogil=True)
def _decode(text, ends, bodies, rows, head, has_pu, values, symbol, data_key, one_letter, powers):
    """Fill head, has_pu, values and symbol diff by diff; whether every diff is in the shape (and
    names the symbol the first names)."""
    args = borrowed((text, ends, bodies, rows, head, has_pu, values, symbol, data_key, one_letter, powers))
    text, ends, bodies, rows, head, has_pu, values, symbol, data_key, one_letter, powers = args
    written = 0
    for r in range(rows.shape[0]):
        line = rows[r]
        end = message_end(text, ends, line)
        seen = _diff(text, bodies[line], end, head, r, values, written, symbol, data_key, one_letter, powers)
        if seen < 0:
            return False
        has_pu[r] = (seen & _PU) != 0
        written = head[_ASKS_END, r]
    return True


@nb.njit(cache=True, nogil=True)
def _spread(head, values, received, line_nos, integers, prices, sizes, side_is_bid):
    """Fill the level rows' integers, prices, sizes and side_is_bid: each diff's fields on its rows."""
    start = 0
    for r in range(head.shape[1]):
        for k in range(start, head[_ASKS_END, r]):
            integers[0, k] = head[_EVENT, r]
            integers[1, k] = received[r]
            integers[2, k] = head[_FINAL, r]
            integers[3, k] = head[_FIRST, r]
            integers[4, k] = head[_PREV, r]
            integers[5, k] = line_nos[r]
            prices[k] = values[2 * k]
            sizes[k] = values[2 * k + 1]
            side_is_bid[k] = k < head[_BIDS_END, r]
        start = head[_ASKS_END, r]


@nb.njit(cache=True, nogil=True)
def _diff(text, p, end, head, r, values, written, symbol, data_key, one_letter, powers):
    """Read the diff from p to end into head[:, r] and its levels into `values` (from level
    `written`); the bits of the fields it carries, or -1."""
    p = data_start(text, p, end, data_key)
    if p < 0:
        return -1
    seen = 0
    head[_PREV, r] = 0
    while True:
        key = p + 1
        p = key_end(text, p, end)
        if p < 0:
            return -1
        field = _field(text, key, p - 2 - key, one_letter)
        if field == 0 or seen & field:
            return -1
        seen |= field
        if field == _B or field == _A:
            if field == _B and seen & _A:  # the level rows are each diff's bids, then its asks
                return -1
            p, written = _levels(text, p, end, values, written, powers)
            head[_BIDS_END if field == _B else _ASKS_END, r] = written
        elif field == _S or field == _EVENT_TYPE:
            start = p + 1
            p = string_end(text, p, end)
            if p >= 0 and field == _S and not same_symbol(text, start, p - 1, symbol):
                return -1
        else:
            p, value = integer(text, p, end)
            if field == _E:
                head[_EVENT, r] = value
            elif field == _U_FIRST:
                head[_FIRST, r] = value
            elif field == _U:
                head[_FINAL, r] = value
            elif field == _PU:
                head[_PREV, r] = value
        p, closed = value_end(text, p, end)
        if p < 0:
            return -1
        if closed:
            break
    if seen & _REQUIRED != _REQUIRED or not data_end(text, p, end):
        return -1
    return seen


@nb.njit(cache=True, nogil=True)
def _field(text, key, length, one_letter):
    """The bit of the field named text[key: key + length], 0 for a name not read."""
    if length == 1:
        return one_letter[text[key]]  # ASCII: `capture_bulk` checked the chunk
    if is_pu(text, key, length):
        return _PU
    return 0


@nb.njit(cache=True, nogil=True)
def _levels(text, p, end, values, written, powers):
    """(past, level rows written after) the array of [price, size] pairs at p; (-1, written) else."""
    if p >= end or text[p] != LIST:
        return -1, written
    p += 1
    if p < end and text[p] == END_LIST:
        return p + 1, written
    while True:
        if p >= end or text[p] != LIST:
            return -1, written
        p, price = decimal(text, p + 1, end, powers)
        if p < 0 or p >= end or text[p] != COMMA:
            return -1, written
        p, size = decimal(text, p + 1, end, powers)
        if p < 0 or p + 1 >= end or text[p] != END_LIST:
            return -1, written
        values[2 * written] = price
        values[2 * written + 1] = size
        written += 1
        p += 1
        if text[p] == END_LIST:
            return p + 1, written
        if text[p] != COMMA:
            return -1, written
        p += 1

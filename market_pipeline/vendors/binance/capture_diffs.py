"""A chunk's depth diffs decoded in one pass of numba, when every one of them is in the exact shape
Binance sends: `{"stream":"<s>@depth..","data":{"e":"depthUpdate","E":..,"T":..,"s":"..","U":..,
"u":..,"pu":..,"b":[["<price>","<size>"],..],"a":[..]}}`, compact, fields in any order, each at
most once (`T` and `pu` are futures'), integers in JSON's spelling within int64, strings without
escapes, prices and sizes plain decimals (`12`, `0.0100`) of at most 15 significant digits.

Each number is read as the line path reads it: a decimal of at most 15 significant digits and 22
decimals is m / 10**k with m and 10**k exact doubles, and one IEEE division rounds it correctly
(Clinger's fast path), as polars' cast and Python's `float` do. Whatever else a diff holds (a
space, an escape, an exponent, a null, another field, a duplicated one) sends the chunk to Arrow's reader
(`capture_bulk._parse`), which hands what it does not read to the line path: this path only ever
reads lines the others read, the same way.

Why not a library: per million lines of the bench day's capture (870 k diffs, 174 MB), Arrow's
JSON reader took 2.5-3.1 CPU-s to give the levels as strings, and their order and cast 1.2 more;
polars' NDJSON reader 8.8-9.6 s, msgspec 13-15 s into typed structs. This pass takes about 0.6 s
(the scan of `capture_scan` before it 0.25 s).
"""

from __future__ import annotations

import numba as nb
import numpy as np

from market_pipeline.vendors.binance.capture_scan import digits

_QUOTE, _COLON, _COMMA, _CLOSE, _LIST, _END_LIST = (ord(c) for c in '":,}[]')
_DOT, _ZERO, _NINE, _NEWLINE, _BACKSLASH = (ord(c) for c in ".09\n\\")
_EXACT_MANTISSA = 10**15  # fewer significant digits than this: m < 2**53, an exact double
_POWERS = np.array([float(10**k) for k in range(23)])  # 10**k is an exact double up to k = 22
_DATA = np.frombuffer(b',"data":{', dtype=np.uint8)
# The fields read, by their one- or two-letter names: a bit each, to find the duplicated and the missing.
_E, _T, _S, _U_FIRST, _U, _PU, _B, _A, _EVENT_TYPE = (1 << k for k in range(9))


def _one_letter_fields() -> np.ndarray:
    """The bit of each field named by one letter, indexed by the letter's byte ("pu" is the one of two)."""
    table = np.zeros(128, dtype=np.int64)
    for letter, bit in zip("ETsUubae", (_E, _T, _S, _U_FIRST, _U, _B, _A, _EVENT_TYPE), strict=True):
        table[ord(letter)] = bit
    return table


_ONE_LETTER = _one_letter_fields()
_P, _LOWER_U = ord("p"), ord("u")
_REQUIRED = _E | _S | _U_FIRST | _U | _B | _A

# The head arrays' columns.
DIFF_HEAD = ("E", "U", "u", "pu", "bids", "asks", "has_pu")
_EVENT, _FIRST, _FINAL, _PREV, _BIDS, _ASKS, _HAS_PU = range(len(DIFF_HEAD))


def decode_diffs(text: np.ndarray, ends: np.ndarray, bodies: np.ndarray, rows: np.ndarray):
    """(head, levels, symbol) of the diffs on lines `rows` of a `LineChunk` (`bodies`: where each
    line's message starts, from `capture_scan`): head is int64 [len(DIFF_HEAD), n], a row a
    column; levels float64 price, size, price, size, ... of each diff's bids then asks; symbol the
    bytes of their `s`. None unless every one is in the shape above and they name one symbol."""
    head = np.empty((len(DIFF_HEAD), len(rows)), dtype=np.int64)
    levels = np.empty(2 * (len(text) // 9 + 1), dtype=np.float64)  # a level takes 9 bytes at least
    symbol = np.zeros(2, dtype=np.int64)  # start and end in `text` of the first diff's symbol
    count = _decode(text, ends, bodies, rows, head, levels, symbol, _DATA, _ONE_LETTER, _POWERS)
    if count < 0:
        return None
    return head, levels[:count], text[symbol[0] : symbol[1]].tobytes()


@nb.njit(cache=True, nogil=True)
def _decode(text, ends, bodies, rows, head, levels, symbol, data_key, one_letter, powers):
    """Fill head, levels and symbol; the number of level values written, or -1 at the first diff
    not in the shape (or naming another symbol than the first)."""
    written = 0
    for r in range(rows.shape[0]):
        line = rows[r]
        end = ends[line]
        if text[end - 1] == _NEWLINE:
            end -= 1
        written = _diff(text, bodies[line], end, head, r, levels, written, symbol, data_key, one_letter, powers)
        if written < 0:
            return -1
    return written


@nb.njit(cache=True, nogil=True)
def _diff(text, p, end, head, r, levels, written, symbol, data_key, one_letter, powers):
    """Read the diff from p to end into head[:, r] and levels (from `written`); the level values
    written after it, or -1."""
    p = _string(text, p + 10, end)  # the stream's name: `{"stream":` is 10 bytes, checked by the scan
    if p < 0 or end - p < data_key.shape[0]:
        return -1
    for k in range(data_key.shape[0]):
        if text[p + k] != data_key[k]:
            return -1
    p += data_key.shape[0]
    seen = 0
    head[_PREV, r] = 0
    while True:
        if p + 4 > end or text[p] != _QUOTE:
            return -1
        key = p + 1
        p = _string(text, p, end)
        if p < 0 or p >= end or text[p] != _COLON:
            return -1
        field = _field(text, key, p - 1 - key, one_letter)
        if field == 0 or seen & field:
            return -1
        seen |= field
        p += 1
        if field == _B or field == _A:
            first = written
            p, written = _levels(text, p, end, levels, written, powers)
            head[_BIDS if field == _B else _ASKS, r] = (written - first) >> 1
        elif field == _S or field == _EVENT_TYPE:
            start = p + 1
            p = _string(text, p, end)
            if p >= 0 and field == _S and not _same_symbol(text, start, p - 1, symbol):
                return -1
        else:
            p, value = _integer(text, p, end)
            if field == _E:
                head[_EVENT, r] = value
            elif field == _U_FIRST:
                head[_FIRST, r] = value
            elif field == _U:
                head[_FINAL, r] = value
            elif field == _PU:
                head[_PREV, r] = value
        if p < 0 or p >= end:
            return -1
        if text[p] == _CLOSE:
            break
        if text[p] != _COMMA:
            return -1
        p += 1
    if seen & _REQUIRED != _REQUIRED or p + 2 != end or text[p + 1] != _CLOSE:
        return -1
    head[_HAS_PU, r] = 1 if seen & _PU else 0
    return written


@nb.njit(cache=True, nogil=True)
def _field(text, key, length, one_letter):
    """The bit of the field named text[key: key + length], 0 for a name not read."""
    if length == 1:
        return one_letter[text[key]]  # ASCII: `capture_bulk` checked the chunk
    if length == 2 and text[key] == _P and text[key + 1] == _LOWER_U:
        return _PU
    return 0


@nb.njit(cache=True, nogil=True)
def _string(text, p, end):
    """Past the string starting with the quote at p (no escapes), or -1."""
    if p >= end or text[p] != _QUOTE:
        return -1
    p += 1
    while p < end and text[p] != _QUOTE:
        if text[p] == _BACKSLASH:
            return -1
        p += 1
    return p + 1 if p < end else -1


@nb.njit(cache=True, nogil=True)
def _same_symbol(text, start, stop, symbol):
    """Whether text[start:stop] is the symbol of the first diff (which it becomes if none yet)."""
    if symbol[1] == 0:
        symbol[0] = start
        symbol[1] = stop
        return True
    if stop - start != symbol[1] - symbol[0]:
        return False
    for k in range(stop - start):
        if text[start + k] != text[symbol[0] + k]:
            return False
    return True


@nb.njit(cache=True, nogil=True)
def _integer(text, p, end):
    """(past, value) of the JSON integer at p (no sign, no leading zero) within int64; (-1, 0) else."""
    past, value = digits(text, p, end)
    if past <= p or (text[p] == _ZERO and past - p > 1):
        return -1, 0
    return past, value


@nb.njit(cache=True, nogil=True)
def _decimal(text, p, end, powers):
    """(past the closing quote, value) of the quoted decimal at p (`0` or digits not starting with
    0, then maybe `.` and digits), at most 15 significant digits; (-1, 0.0) else."""
    if p >= end or text[p] != _QUOTE:
        return -1, 0.0
    p += 1
    start = p
    mantissa = 0
    while p < end and _ZERO <= text[p] <= _NINE:
        mantissa = mantissa * 10 + (text[p] - _ZERO)
        p += 1
        if mantissa >= _EXACT_MANTISSA:
            return -1, 0.0
    if p == start or (text[start] == _ZERO and p - start > 1):
        return -1, 0.0
    decimals = 0
    if p < end and text[p] == _DOT:
        p += 1
        fraction = p
        while p < end and _ZERO <= text[p] <= _NINE:
            mantissa = mantissa * 10 + (text[p] - _ZERO)
            p += 1
            if mantissa >= _EXACT_MANTISSA:
                return -1, 0.0
        decimals = p - fraction
        if decimals == 0 or decimals >= powers.shape[0]:
            return -1, 0.0
    if p >= end or text[p] != _QUOTE:
        return -1, 0.0
    return p + 1, mantissa / powers[decimals]


@nb.njit(cache=True, nogil=True)
def _levels(text, p, end, levels, written, powers):
    """(past, level values written after) the array of [price, size] pairs at p; (-1, written) else."""
    if p >= end or text[p] != _LIST:
        return -1, written
    p += 1
    if p < end and text[p] == _END_LIST:
        return p + 1, written
    while True:
        if p >= end or text[p] != _LIST:
            return -1, written
        p, price = _decimal(text, p + 1, end, powers)
        if p < 0 or p >= end or text[p] != _COMMA:
            return -1, written
        p, size = _decimal(text, p + 1, end, powers)
        if p < 0 or p + 1 >= end or text[p] != _END_LIST:
            return -1, written
        levels[written] = price
        levels[written + 1] = size
        written += 2
        p += 1
        if text[p] == _END_LIST:
            return p + 1, written
        if text[p] != _COMMA:
            return -1, written
        p += 1

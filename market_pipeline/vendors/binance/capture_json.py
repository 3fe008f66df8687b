"""The JSON the one-pass readers of a capture chunk read (`capture_diffs` the depth diffs,
`capture_flat` the bookTickers and trades), in numba: the combined-stream envelope, a field's name,
and a value of each kind they take, each spelled only as Binance spells it.

Every function returns the position past what it read, or -1 (with a placeholder value) when the
text there is not in that shape: the reader then declines the chunk's messages of that kind, and
Arrow's reader or the line path reads them (`capture_bulk`). So the readers only ever accept what
the others accept, and read it the same way:

- a string has no escape (a key or a symbol with one goes to the others);
- an integer is JSON's (no sign, no leading zero) within int64;
- a decimal (price, size) is quoted, `0` or digits not starting with 0, then maybe `.` and 1 to 22
  digits, at most 15 significant digits in all: m / 10**k with m and 10**k exact doubles, which one
  IEEE division rounds correctly (Clinger's fast path), as polars' cast and Python's `float` do.
"""

from __future__ import annotations

import numba as nb
import numpy as np

from market_pipeline.vendors.binance.capture_scan import digits

QUOTE, COLON, COMMA, CLOSE, LIST, END_LIST = (ord(c) for c in '":,}[]')
_DOT, _ZERO, _NINE, _BACKSLASH = (ord(c) for c in ".09\\")
_T, _F, _P, _LOWER_U, _NEWLINE = (ord(c) for c in "tfpu\n")
_TRUE, _FALSE = np.frombuffer(b"true", dtype=np.uint8), np.frombuffer(b"false", dtype=np.uint8)
_EXACT_MANTISSA = 10**15  # fewer significant digits than this: m < 2**53, an exact double
POWERS = np.array([float(10**k) for k in range(23)])  # 10**k is an exact double up to k = 22
DATA_KEY = np.frombuffer(b',"data":{', dtype=np.uint8)
_STREAM_KEY_BYTES = len(b'{"stream":')  # checked by `capture_scan` before a reader is called


@nb.njit(cache=True, nogil=True)
def message_end(text, ends, line):
    """Where the message on line `line` of a chunk (`LineChunk`'s text and ends) ends: before its
    newline (the file's last line may have none)."""
    end = ends[line]
    return end - 1 if text[end - 1] == _NEWLINE else end


@nb.njit(cache=True, nogil=True)
def data_start(text, body, end, data_key):
    """Past `{"stream":"<name>","data":{` of the message at `body` (its first bytes checked by the
    scan), or -1."""
    p = string_end(text, body + _STREAM_KEY_BYTES, end)
    if p < 0 or end - p < data_key.shape[0]:
        return -1
    for k in range(data_key.shape[0]):
        if text[p + k] != data_key[k]:
            return -1
    return p + data_key.shape[0]


@nb.njit(cache=True, nogil=True)
def data_end(text, p, end):
    """Whether the `}` at p closes the data and one more `}` the message, at the line's end."""
    return p + 2 == end and text[p] == CLOSE and text[p + 1] == CLOSE


@nb.njit(cache=True, nogil=True)
def value_end(text, p, end):
    """(past the comma, False) when another field follows the value that ended at p, (p, True)
    when the `}` there closes the object, (-1, False) else."""
    if p < 0 or p >= end:
        return -1, False
    if text[p] == CLOSE:
        return p, True
    if text[p] != COMMA:
        return -1, False
    return p + 1, False


@nb.njit(cache=True, nogil=True)
def is_pu(text, key, length):
    """Whether the key text[key: key + length] is `pu` (futures diffs' previous update id), the one
    field of two letters the line path reads."""
    return length == 2 and text[key] == _P and text[key + 1] == _LOWER_U


@nb.njit(cache=True, nogil=True)
def string_end(text, p, end):
    """Past the string starting with the quote at p (no escapes), or -1."""
    if p >= end or text[p] != QUOTE:
        return -1
    p += 1
    while p < end and text[p] != QUOTE:
        if text[p] == _BACKSLASH:
            return -1
        p += 1
    return p + 1 if p < end else -1


@nb.njit(cache=True, nogil=True)
def key_end(text, p, end):
    """Past the colon after the key whose quote is at p, or -1 (its name: text[p + 1: past - 2])."""
    p = string_end(text, p, end)
    if p < 0 or p >= end or text[p] != COLON:
        return -1
    return p + 1


@nb.njit(cache=True, nogil=True)
def same_symbol(text, start, stop, symbol):
    """Whether text[start:stop] is the symbol named first (`symbol`: its start and stop in `text`,
    which it becomes if no symbol was named yet)."""
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
def integer(text, p, end):
    """(past, value) of the JSON integer at p (no sign, no leading zero) within int64; (-1, 0) else."""
    past, value = digits(text, p, end)
    if past <= p or (text[p] == _ZERO and past - p > 1):
        return -1, 0
    return past, value


@nb.njit(cache=True, nogil=True)
def boolean(text, p, end):
    """(past, 1 or 0) of `true` or `false` at p; (-1, 0) else."""
    if p < end and text[p] == _T and _literal(text, p, end, _TRUE):
        return p + 4, 1
    if p < end and text[p] == _F and _literal(text, p, end, _FALSE):
        return p + 5, 0
    return -1, 0


@nb.njit(cache=True, nogil=True)
def _literal(text, p, end, word):
    if end - p < word.shape[0]:
        return False
    for k in range(word.shape[0]):
        if text[p + k] != word[k]:
            return False
    return True


@nb.njit(cache=True, nogil=True)
def simple_value_end(text, p, end):
    """Past the string, integer, `true` or `false` at p (a field a reader skips), or -1: anything
    else (a null, a fraction, an object) is for the others to read."""
    if p >= end:
        return -1
    if text[p] == QUOTE:
        return string_end(text, p, end)
    if _ZERO <= text[p] <= _NINE:
        return integer(text, p, end)[0]
    return boolean(text, p, end)[0]


@nb.njit(cache=True, nogil=True)
def decimal(text, p, end, powers):
    """(past the closing quote, value) of the quoted decimal at p; (-1, 0.0) else (see the module doc)."""
    if p >= end or text[p] != QUOTE:
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
    if p >= end or text[p] != QUOTE:
        return -1, 0.0
    return p + 1, mantissa / powers[decimals]

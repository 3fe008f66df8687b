"""Numbers in a Tardis CSV line, read in numba by the line readers (`l2_text`, `snapshot_text`).

`scientific` takes one shape and declines anything else (the reader then stops and Arrow's reader
reads the file, `line_blocks`), so it only ever accepts what Arrow accepts, and reads it to the
same double: `0` or digits not starting with 0, then maybe `.` and 1 to 22 digits, at most 15
significant digits, then maybe an exponent. The value is m * 10**k with m and 10**k exact
doubles, which one IEEE operation rounds correctly (Clinger's fast path), as Arrow's parser and
Python's `float` do. (The capture readers' quoted decimals, vendors/binance/capture_json, are
read the same way by their own function: built on this one, the capture's diffs decoded 10%
slower.)
"""

from __future__ import annotations

import numba as nb
import numpy as np

_DOT, _ZERO, _NINE, _LOWER_E, _UPPER_E, _MINUS, _PLUS = (ord(c) for c in ".09eE-+")
_EXACT_MANTISSA = 10**15  # fewer significant digits than this: m < 2**53, an exact double
POWERS = np.array([float(10**k) for k in range(23)])  # 10**k is an exact double up to k = 22


@nb.njit(cache=True, nogil=True, inline="always")
def _digits_of(text, p, end, powers):
    """(past, mantissa, digits after the dot) of a decimal's digits at p; past is -1 when they are
    not in the shape."""
    start = p
    mantissa = 0
    while p < end and _ZERO <= text[p] <= _NINE:
        mantissa = mantissa * 10 + (text[p] - _ZERO)
        p += 1
        if mantissa >= _EXACT_MANTISSA:
            return -1, 0, 0
    if p == start or (text[start] == _ZERO and p - start > 1):
        return -1, 0, 0
    decimals = 0
    if p < end and text[p] == _DOT:
        p += 1
        fraction = p
        while p < end and _ZERO <= text[p] <= _NINE:
            mantissa = mantissa * 10 + (text[p] - _ZERO)
            p += 1
            if mantissa >= _EXACT_MANTISSA:
                return -1, 0, 0
        decimals = p - fraction
        if decimals == 0 or decimals >= powers.shape[0]:
            return -1, 0, 0
    return p, mantissa, decimals


@nb.njit(cache=True, nogil=True, inline="always")
def scientific(text, p, end, powers):
    """(past, value) of a decimal maybe followed by an exponent (`e` or `E`, maybe a sign, 1 to 3
    digits), as Python's `repr` and polars write a small float (`4e-06`); (-1, 0.0) else. The value
    is m * 10**k, k the exponent less the digits after the dot: with |k| <= 22 one IEEE operation on
    exact doubles, rounded correctly any other k is declined. Inlined: called, it made the L2 reader 1.7x slower."""
    p, mantissa, decimals = _digits_of(text, p, end, powers)
    if p < 0:
        return -1, 0.0
    if p >= end or (text[p] != _LOWER_E and text[p] != _UPPER_E):
        return p, mantissa / powers[decimals]
    p += 1
    negative = p < end and text[p] == _MINUS
    if p < end and (text[p] == _MINUS or text[p] == _PLUS):
        p += 1
    start = p
    exponent = 0
    while p < end and _ZERO <= text[p] <= _NINE and p - start < 3:
        exponent = exponent * 10 + (text[p] - _ZERO)
        p += 1
    if p == start or (p < end and _ZERO <= text[p] <= _NINE):
        return -1, 0.0
    k = (-exponent if negative else exponent) - decimals
    if k < 0:
        return (p, mantissa / powers[-k]) if -k < powers.shape[0] else (-1, 0.0)
    return (p, mantissa * powers[k]) if k < powers.shape[0] else (-1, 0.0)

"""Grid precision of vendor floats: values off the tick/lot grid and float noise on it.

- **Off grid**: value / step lies more than `OFF_GRID_TOLERANCE` steps from an integer (the
  book kernel's rule). The value cannot be a price or size of the instrument.
- **Precision loss**: on the grid, yet not the float nearest to its decimal value (the vendor
  passed the number through lossy arithmetic). For a step p / 10^k the nearest float of
  n steps is the correctly rounded division (n * p) / 10^k, exact while n * p < 2^53.
"""

from __future__ import annotations

from decimal import Decimal
from typing import NamedTuple

import numpy as np
import polars as pl
from numba import njit

from market_pipeline.core.book.fixed_point import OFF_GRID_TOLERANCE


def grid_flags(values: np.ndarray, step: Decimal) -> tuple[np.ndarray, np.ndarray]:
    """(off_grid, precision_loss) boolean arrays for float values; NaN is neither.

    A numba loop, not polars expressions: polars divides by a literal through its reciprocal,
    which is not the correctly rounded quotient this test relies on.
    """
    p, q = step.normalize().as_integer_ratio()
    values = np.ascontiguousarray(values, dtype=np.float64)
    off_grid = np.empty(values.shape[0], dtype=np.bool_)
    loss = np.empty(values.shape[0], dtype=np.bool_)
    _grid_flags(values, float(step), float(p), float(q), OFF_GRID_TOLERANCE, off_grid, loss)
    return off_grid, loss


class GridTally(NamedTuple):
    """`grid_flags` of a column counted, with the first rows of each kind."""

    off_grid: int
    precision_loss: int
    off_grid_rows: np.ndarray
    precision_loss_rows: np.ndarray


def grid_tally(chunks: list[np.ndarray], step: Decimal, off_grid_room: int, loss_room: int) -> GridTally:
    """`grid_flags` of a column given as chunks, counted, with the first rows of each kind (rows
    counted across the chunks; at most `off_grid_room` and `loss_room`), and no flag arrays made:
    0.36 ns a value against 2.5 for the flags and their sums."""
    p, q = step.normalize().as_integer_ratio()
    found = np.zeros(2, dtype=np.int64)
    room = np.array([off_grid_room, loss_room], dtype=np.int64)
    rows = np.zeros((2, max(off_grid_room, loss_room)), dtype=np.int64)
    base = 0
    for values in chunks:
        values = np.ascontiguousarray(values, dtype=np.float64)
        _grid_tally(values, float(step), float(p), float(q), OFF_GRID_TOLERANCE, base, found, room, rows)
        base += values.shape[0]
    off_grid, loss = int(found[0]), int(found[1])
    return GridTally(off_grid, loss, rows[0, : min(off_grid, off_grid_room)], rows[1, : min(loss, loss_room)])


@njit(cache=True, nogil=True, inline="always")
def _value_flags(value, step, p, q, tolerance):
    """(off grid, precision loss) of one value: the rule of the module's docstring."""
    scaled = value / step
    steps = np.rint(scaled)
    off = abs(scaled - steps) > tolerance  # False for NaN
    return off, not off and value == value and value != steps * p / q


@njit(cache=True, nogil=True)
def _grid_flags(values, step, p, q, tolerance, off_grid, loss):
    for i in range(values.shape[0]):
        off_grid[i], loss[i] = _value_flags(values[i], step, p, q, tolerance)


@njit(cache=True, nogil=True)
def _grid_tally(values, step, p, q, tolerance, base, found, room, rows):
    """Counts values off the grid into found[0] and with precision loss into found[1], and keeps
    the first rows (`base` + position) of each in rows[0] and rows[1], up to room[0] and room[1].
    The count is a loop of its own, which LLVM vectorizes (divisions included); the rows are
    looked for again only in a chunk that has some to keep, and no further than the last."""
    off_grid = loss = 0
    for i in range(values.shape[0]):
        off, lost = _value_flags(values[i], step, p, q, tolerance)
        off_grid += off
        loss += lost
    # The rows kept so far are all those found, up to the room.
    kept_off, kept_loss = min(found[0], room[0]), min(found[1], room[1])
    last_off, last_loss = min(room[0], found[0] + off_grid), min(room[1], found[1] + loss)
    for i in range(values.shape[0]):
        if kept_off == last_off and kept_loss == last_loss:
            break
        off, lost = _value_flags(values[i], step, p, q, tolerance)
        if off and kept_off < last_off:
            rows[0, kept_off] = base + i
            kept_off += 1
        elif lost and kept_loss < last_loss:
            rows[1, kept_loss] = base + i
            kept_loss += 1
    found[0] += off_grid
    found[1] += loss


def max_decimals(values: pl.Series) -> int | None:
    """Most digits after the point in the shortest round-trip spelling of any value."""
    most = None
    for value in values.drop_nulls().unique().to_list():
        exponent = Decimal(repr(float(value))).as_tuple().exponent
        if isinstance(exponent, int):
            most = max(most or 0, -exponent)
    return most


class SeenValues:
    """The distinct float values seen so far (a day's prices), as a numba hash set of their bits.

    `add` returns a batch's values not seen before: a day repeats a few thousand prices over
    millions of rows, and a probe of a table that small beats polars' `unique` (a hash table per
    batch) and `is_in` against the earlier batches' values. Equal floats of other bits (-0.0 and
    0.0, NaN payloads) may both come back; `max_decimals` spells them alike.
    """

    def __init__(self) -> None:
        self._slots = np.zeros(1024, dtype=np.uint64)
        self._used = np.zeros(1024, dtype=np.bool_)
        self._filled = 0

    def add(self, values: pl.Series) -> pl.Series:
        new = np.empty(len(values), dtype=np.uint64)
        found = 0
        for chunk in values.cast(pl.Float64).get_chunks():  # each without a copy
            bits = chunk.drop_nulls().to_numpy().view(np.uint64)
            start = 0
            while start < len(bits):  # the kernel stops when the table is half full, to grow it
                start, found, self._filled = _add_new(bits, start, self._slots, self._used, self._filled, new, found)
                if 2 * self._filled >= len(self._slots):
                    self._slots, self._used = _grown(self._slots, self._used)
        return pl.Series(values.name, new[:found].view(np.float64))


_SPREAD = np.uint64(0x9E3779B97F4A7C15)


@njit(cache=True, nogil=True, inline="always")
def _slot(value, mask):
    return (value * _SPREAD >> np.uint64(32)) & mask


@njit(cache=True, nogil=True)
def _add_new(bits, start, slots, used, filled, new, found):
    """Insert `bits[start:]` into the open-addressing table (`slots`, `used`), writing the values
    not in it to `new[found:]`, until the table is half full; returns (next row, found, filled)."""
    mask = np.uint64(slots.shape[0] - 1)
    for i in range(start, bits.shape[0]):
        if 2 * filled >= slots.shape[0]:
            return i, found, filled
        value = bits[i]
        if i > 0 and value == bits[i - 1]:
            continue  # runs of one value are common and need no probe
        at = _slot(value, mask)
        while used[at] and slots[at] != value:
            at = (at + np.uint64(1)) & mask
        if not used[at]:
            used[at] = True
            slots[at] = value
            filled += 1
            new[found] = value
            found += 1
    return bits.shape[0], found, filled


@njit(cache=True, nogil=True)
def _grown(slots, used):
    bigger = np.zeros(2 * slots.shape[0], dtype=np.uint64)
    taken = np.zeros(2 * slots.shape[0], dtype=np.bool_)
    mask = np.uint64(bigger.shape[0] - 1)
    for j in range(slots.shape[0]):
        if used[j]:
            at = _slot(slots[j], mask)
            while taken[at]:
                at = (at + np.uint64(1)) & mask
            taken[at] = True
            bigger[at] = slots[j]
    return bigger, taken

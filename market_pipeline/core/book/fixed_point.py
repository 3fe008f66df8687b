"""Fixed-point grids: vendor float64 prices and sizes to int64 ticks and lots, and back to exact decimals.

A float is on the grid when value / step lies within float noise of an integer. One that is
not is a precision-loss event: it is rounded to the nearest step (the book needs an integer
key) but its row is reported, never silently absorbed.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

import numba as nb
import numpy as np
import pyarrow as pa

# |value/step - round(value/step)| above this many steps is off grid; float64 noise on a
# price of 1e6 with a step of 1e-8 stays below 1e-5 steps.
OFF_GRID_TOLERANCE = 1e-4
MAX_REPORTED_PRECISION_EVENTS = 100


@dataclass
class Grid:
    """An instrument's price and size steps: prices are whole ticks, sizes whole lots."""

    tick_size: Decimal
    lot_size: Decimal

    @property
    def tick(self) -> float:
        return float(self.tick_size)

    @property
    def lot(self) -> float:
        return float(self.lot_size)


def decimals_of(step: Decimal) -> int:
    """Digits after the point needed to write multiples of `step` exactly (0.01 -> 2, 5 -> 0)."""
    exponent = step.normalize().as_tuple().exponent
    assert isinstance(exponent, int)
    return max(0, -exponent)


@nb.njit(cache=True, nogil=True)
def steps_into(values, step, out, off_grid_rows, max_reported):
    """Round `values` to multiples of `step` into `out` (any int64 array of their length, a
    column of a matrix too); NaN and infinities become -1 steps. Returns the count of off-grid
    values; the indices of the first `max_reported` are written into `off_grid_rows`."""
    off = 0
    for i in range(values.shape[0]):
        x = values[i] / step
        if not np.isfinite(x):
            out[i] = -1
            continue
        r = np.rint(x)
        out[i] = np.int64(r)
        if abs(x - r) > OFF_GRID_TOLERANCE:
            if off < max_reported:
                off_grid_rows[off] = i
            off += 1
    return off


def to_steps(values: np.ndarray, step: float, off_grid_rows: np.ndarray, max_reported: int) -> tuple[np.ndarray, int]:
    """`steps_into` a new array: (steps int64[n], off_grid_count)."""
    out = np.empty(values.shape[0], np.int64)
    return out, steps_into(values, step, out, off_grid_rows, max_reported)


class PrecisionCounter:
    """Counts values off the grid and keeps the first few rows for the report."""

    def __init__(self) -> None:
        self.count = 0
        self.examples: list[dict[str, object]] = []
        self._rows = np.empty(MAX_REPORTED_PRECISION_EVENTS, dtype=np.int64)

    def convert(
        self, values: np.ndarray, step: float, column: str, offset: int, seq: np.ndarray, out: np.ndarray | None = None
    ) -> np.ndarray:
        """`values` in steps (into `out` when given, e.g. a column of a batch's matrix: no array
        of its own); off-grid values counted and the first few kept, row `offset` + i."""
        if out is None:
            out = np.empty(values.shape[0], np.int64)
        off = steps_into(values, step, out, self._rows, MAX_REPORTED_PRECISION_EVENTS)
        if off:
            for r in self._rows[: min(off, MAX_REPORTED_PRECISION_EVENTS - len(self.examples))]:
                self.examples.append(
                    {
                        "column": column,
                        "row": int(offset + r),
                        "sequence_number": int(seq[r]),
                        "value": float(values[r]),
                    }
                )
            self.count += off
        return out


def decimal_type(step: Decimal) -> pa.DataType:
    """The Arrow type of multiples of `step`: decimal64, i.e. the unscaled value as one int64."""
    return pa.decimal64(18, decimals_of(step))


def unscaled_multiplier(step: Decimal) -> int:
    """Steps times this are the unscaled decimal (0.01 -> 1, 0.05 -> 5, 5 -> 5)."""
    return int(step * (Decimal(10) ** decimals_of(step)))


def decimal_array(unscaled: np.ndarray, step: Decimal, valid: np.ndarray | None = None) -> pa.Array:
    """Exact decimal Arrow array over contiguous unscaled int64 values, without copying them.

    `valid` (bool per row) marks non-null rows; None means all are valid.
    """
    if unscaled.dtype != np.int64 or not unscaled.flags.c_contiguous:
        raise ValueError("decimal_array needs contiguous int64 unscaled values")
    validity = None
    null_count = 0
    if valid is not None and not valid.all():
        validity = pa.py_buffer(np.packbits(valid, bitorder="little"))
        null_count = int(len(valid) - np.count_nonzero(valid))
    return pa.Array.from_buffers(
        decimal_type(step), len(unscaled), [validity, pa.py_buffer(unscaled)], null_count=null_count
    )


def unscaled_int64(array: pa.Array) -> np.ndarray | None:
    """A decimal64 array's unscaled values (value x 10^scale) as int64, nulls as 0, without
    converting through floats; None for any other type."""
    if not (pa.types.is_decimal(array.type) and array.type.bit_width == 64):
        return None
    unscaled = array.view(pa.int64())
    return np.asarray(unscaled.fill_null(0) if array.null_count else unscaled)


def grid_steps(array: pa.Array, step: Decimal) -> np.ndarray | None:
    """A decimal64 array's values as whole multiples of `step` (nulls as 0), exactly in integers
    (`decimal_array` undone); None when the array is not decimal64 or a value is off the grid, for
    the caller to round as its readers do."""
    unscaled = unscaled_int64(array)
    if unscaled is None:
        return None
    per_step = step * 10**array.type.scale
    if per_step == 1:
        return unscaled
    if per_step != per_step.to_integral_value() or np.any(unscaled % int(per_step)):
        return None
    return unscaled // int(per_step)

"""Grid precision of vendor floats: values off the tick/lot grid and float noise on it.

- **Off grid**: value / step lies more than `OFF_GRID_TOLERANCE` steps from an integer (the
  book kernel's rule). The value cannot be a price or size of the instrument.
- **Precision loss**: on the grid, yet not the float nearest to its decimal value (the vendor
  passed the number through lossy arithmetic). For a step p / 10^k the nearest float of
  n steps is the correctly rounded division (n * p) / 10^k, exact while n * p < 2^53.
"""

from __future__ import annotations

from decimal import Decimal

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


@njit(cache=True)
def _grid_flags(values, step, p, q, tolerance, off_grid, loss):
    for i in range(values.shape[0]):
        value = values[i]
        scaled = value / step
        steps = np.rint(scaled)
        off = abs(scaled - steps) > tolerance  # False for NaN
        off_grid[i] = off
        loss[i] = not off and value == value and value != steps * p / q


def max_decimals(values: pl.Series) -> int | None:
    """Most digits after the point in the shortest round-trip spelling of any value."""
    most = None
    for value in values.drop_nulls().unique().to_list():
        exponent = Decimal(repr(float(value))).as_tuple().exponent
        if isinstance(exponent, int):
            most = max(most or 0, -exponent)
    return most

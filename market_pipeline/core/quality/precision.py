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

from market_pipeline.core.book.fixed_point import OFF_GRID_TOLERANCE


def grid_flags(values: np.ndarray, step: Decimal) -> tuple[np.ndarray, np.ndarray]:
    """(off_grid, precision_loss) boolean arrays for float values; NaN is neither.

    numpy, not polars expressions: polars divides by a literal through its reciprocal, which is
    not the correctly rounded quotient this test relies on.
    """
    p, q = step.normalize().as_integer_ratio()
    values = np.asarray(values, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        scaled = values / float(step)
        steps = np.rint(scaled)
        off_grid = np.abs(scaled - steps) > OFF_GRID_TOLERANCE
        nearest = np.divide(steps * p, q)
        loss = ~off_grid & ~np.isnan(values) & (values != nearest)
    return off_grid, loss


def max_decimals(values: pl.Series) -> int | None:
    """Most digits after the point in the shortest round-trip spelling of any value."""
    most = None
    for value in values.drop_nulls().unique().to_list():
        exponent = Decimal(repr(float(value))).as_tuple().exponent
        if isinstance(exponent, int):
            most = max(most or 0, -exponent)
    return most

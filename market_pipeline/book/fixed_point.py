"""Fixed-point grids: vendor float64 prices and sizes to int64 ticks and lots, and back to exact decimals.

A float is on the grid when value / step lies within float noise of an integer. One that is
not is a precision-loss event: it is rounded to the nearest step (the book needs an integer
key) but its row is reported, never silently absorbed.
"""

from __future__ import annotations

from decimal import Decimal

import numba as nb
import numpy as np
import pyarrow as pa

# |value/step - round(value/step)| above this many steps is off grid; float64 noise on a
# price of 1e6 with a step of 1e-8 stays below 1e-5 steps.
OFF_GRID_TOLERANCE = 1e-4


def decimals_of(step: Decimal) -> int:
    """Digits after the point needed to write multiples of `step` exactly (0.01 -> 2, 5 -> 0)."""
    exponent = step.normalize().as_tuple().exponent
    assert isinstance(exponent, int)
    return max(0, -exponent)


@nb.njit(cache=True, nogil=True)
def to_steps(values, step, off_grid_rows, max_reported):
    """Round `values` to multiples of `step`; NaN stays NaN-flagged as -1 steps.

    Returns (steps int64[n], off_grid_count). Indices of the first `max_reported` off-grid rows
    are written into `off_grid_rows`.
    """
    n = values.shape[0]
    out = np.empty(n, dtype=np.int64)
    off = 0
    for i in range(n):
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
    return out, off


def steps_to_decimal(steps: np.ndarray, step: Decimal, valid: np.ndarray | None = None) -> pa.Array:
    """Exact decimal128 Arrow array for `steps * step` (null where `valid` is False).

    Built straight from the integer buffer, so no value ever passes through a float.
    """
    scale = decimals_of(step)
    multiplier = int(step * (Decimal(10) ** scale))
    unscaled = steps.astype(np.int64) * multiplier
    words = np.empty((unscaled.shape[0], 2), dtype=np.int64)
    words[:, 0] = unscaled
    words[:, 1] = unscaled >> 63  # sign-extend to 128 bits
    validity = None
    null_count = 0
    if valid is not None and not valid.all():
        validity = pa.py_buffer(np.packbits(valid, bitorder="little"))
        null_count = int((~valid).sum())
    return pa.Array.from_buffers(
        pa.decimal128(18, scale), len(unscaled), [validity, pa.py_buffer(words)], null_count=null_count
    )

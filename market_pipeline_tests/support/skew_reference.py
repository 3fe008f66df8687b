"""The reference bucket rule of the day statistics' skew histogram, in numpy."""

from __future__ import annotations

import numpy as np

from market_pipeline.core.quality.skew_pass import SKEW_SIGNIFICANT_BITS


def skew_buckets(skew_ns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The reference bucket rule of the day statistics' skew histogram, in numpy (skew_pass.py
    applies it in its kernel): (signed bucket start, width) of each skew; |skew| keeps
    SKEW_SIGNIFICANT_BITS significant bits.

    A bucket covers [start, start + width) for skew >= 0 and (-(|start| + width), -|start|] below.
    """
    magnitude = np.abs(skew_ns.astype(np.int64))
    exponent = np.frexp(magnitude.astype(np.float64))[1]  # bit length (0 for 0)
    shift = np.maximum(exponent - SKEW_SIGNIFICANT_BITS, 0).astype(np.int64)
    lower = np.left_shift(np.right_shift(magnitude, shift), shift)
    return np.where(skew_ns < 0, -lower, lower), np.left_shift(np.ones_like(shift), shift)

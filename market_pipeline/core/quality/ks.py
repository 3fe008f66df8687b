"""Two-sample Kolmogorov-Smirnov test in numpy (scipy is not a dependency).

The statistic is D = max |F_x - F_y| over the pooled sample. The two-sided p-value is
P(D >= d) under the null hypothesis that both samples come from one continuous distribution:
- exact for samples small enough to count lattice paths (the Hodges method: the fraction of
  monotone paths from (0, 0) to (n, m) that stay strictly inside |i/n - j/m| < d);
- otherwise the asymptotic Kolmogorov distribution at sqrt(n m / (n + m)) d.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# Exact path counting costs one numpy pass of the longer sample per element of the shorter one.
EXACT_MAX_SHORTER = 10_000
EXACT_MAX_CELLS = 50_000_000


@dataclass(frozen=True)
class KSResult:
    statistic: float
    pvalue: float
    n: int
    m: int
    method: str  # "exact" or "asymptotic"


def ks_2samp(x: np.ndarray, y: np.ndarray) -> KSResult:
    """Two-sided two-sample KS test; NaNs are dropped. Both samples need at least one value."""
    x = np.sort(np.asarray(x, dtype=np.float64))
    y = np.sort(np.asarray(y, dtype=np.float64))
    x, y = x[~np.isnan(x)], y[~np.isnan(y)]
    n, m = len(x), len(y)
    if n == 0 or m == 0:
        raise ValueError(f"KS test needs two non-empty samples, got sizes {n} and {m}")
    # D * n * m as an exact integer: |i m - j n| at every pooled value (ties step together).
    pooled = np.concatenate([x, y])
    i = np.searchsorted(x, pooled, side="right").astype(np.int64)
    j = np.searchsorted(y, pooled, side="right").astype(np.int64)
    numerator = int(np.max(np.abs(i * m - j * n)))
    statistic = numerator / (n * m)
    if min(n, m) <= EXACT_MAX_SHORTER and n * m <= EXACT_MAX_CELLS:
        return KSResult(statistic, _exact_pvalue(n, m, numerator), n, m, "exact")
    return KSResult(statistic, kolmogorov_sf(math.sqrt(n * m / (n + m)) * statistic), n, m, "asymptotic")


def _exact_pvalue(n: int, m: int, numerator: int) -> float:
    """P(D >= numerator / (n m)): one minus the share of paths with |i m - j n| < numerator."""
    if numerator == 0:
        return 1.0
    if n > m:  # iterate over the shorter sample
        n, m = m, n
    cols = np.arange(m + 1, dtype=np.int64)
    row = np.zeros(m + 1)
    log_scale = 0.0
    for i in range(n + 1):
        inside = np.abs(i * m - cols * n) < numerator  # a contiguous run of columns
        if i == 0:
            # Along the first row a path can only move right, so it stops at the first exit.
            row = np.cumprod(inside).astype(np.float64)
        else:
            lo, hi = np.flatnonzero(inside)[[0, -1]] if inside.any() else (0, -1)
            new = np.zeros(m + 1)
            new[lo : hi + 1] = np.cumsum(row[lo : hi + 1])
            row = new
        peak = row.max()
        if peak == 0.0:
            return 1.0
        row /= peak  # rescale so the counts never overflow; the scale is kept in log form
        log_scale += math.log(peak)
    log_total = math.lgamma(n + m + 1) - math.lgamma(n + 1) - math.lgamma(m + 1)
    if row[m] == 0.0:
        return 1.0
    inside_share = math.exp(math.log(row[m]) + log_scale - log_total)
    return float(min(1.0, max(0.0, 1.0 - inside_share)))


def kolmogorov_sf(x: float) -> float:
    """Survival function of the Kolmogorov distribution, Q(x) = P(K > x)."""
    if x <= 0:
        return 1.0
    if x < 1.0:
        # The theta-function form converges fast for small x.
        terms = sum(math.exp(-((2 * k - 1) ** 2) * math.pi**2 / (8 * x * x)) for k in range(1, 20))
        return float(min(1.0, max(0.0, 1.0 - math.sqrt(2 * math.pi) / x * terms)))
    total = sum((-1) ** (k - 1) * math.exp(-2 * k * k * x * x) for k in range(1, 101))
    return float(min(1.0, max(0.0, 2 * total)))

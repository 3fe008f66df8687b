"""`core/quality/ks.py` against scipy (a test-only dependency) on a grid of samples: the same
statistic, the exact p-value of `scipy.stats.ks_2samp(method="exact")`, and in the asymptotic
regime the Kolmogorov distribution of `scipy.stats.kstwobign`."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from market_pipeline.core.quality import ks


@pytest.fixture(scope="module")
def stats():
    """scipy.stats, imported when a test of this file runs rather than whenever a pytest worker
    collects the suite (about 2 s of each worker's collection)."""
    return pytest.importorskip("scipy.stats", reason="scipy is the reference (the dev extra)")


SIZES = (1, 3, 8, 25, 120)
SAMPLES = {
    "same": lambda rng, n: rng.normal(0.0, 1.0, n),
    "shifted": lambda rng, n: rng.normal(0.7, 1.0, n),
    "wider": lambda rng, n: rng.normal(0.0, 3.0, n),
    "ties": lambda rng, n: rng.integers(0, 5, n).astype(float),  # spreads in whole ticks repeat
}


@pytest.mark.parametrize("kind", sorted(SAMPLES))
def test_exact_regime_matches_scipy(kind: str, stats) -> None:
    rng = np.random.default_rng(20240808)
    for n, m in itertools.product(SIZES, SIZES):
        x = rng.normal(0.0, 1.0, n) if kind != "ties" else rng.integers(0, 5, n).astype(float)
        y = SAMPLES[kind](rng, m)
        ours = ks.ks_2samp(x, y)
        reference = stats.ks_2samp(x, y, method="exact")
        assert ours.method == "exact"
        assert ours.statistic == pytest.approx(reference.statistic, abs=1e-12), (kind, n, m)
        assert ours.pvalue == pytest.approx(reference.pvalue, rel=1e-6, abs=1e-12), (kind, n, m)


@pytest.mark.parametrize(("n", "m", "shift"), [(3_000, 4_000, 0.0), (5_000, 2_500, 0.05), (20_000, 30_000, 0.02)])
def test_asymptotic_regime_matches_the_kolmogorov_distribution(
    n: int, m: int, shift: float, monkeypatch: pytest.MonkeyPatch, stats
) -> None:
    monkeypatch.setattr(ks, "EXACT_MAX_SHORTER", 0)  # force the asymptotic branch at sizes scipy computes fast
    rng = np.random.default_rng(n + m)
    x, y = rng.normal(0.0, 1.0, n), rng.normal(shift, 1.0, m)
    ours = ks.ks_2samp(x, y)
    reference = stats.ks_2samp(x, y, method="asymp")
    assert ours.method == "asymptotic"
    assert ours.statistic == pytest.approx(reference.statistic, abs=1e-12)
    expected = stats.kstwobign.sf(np.sqrt(n * m / (n + m)) * reference.statistic)
    assert ours.pvalue == pytest.approx(expected, rel=1e-9, abs=1e-15)
    # scipy's own asymptotic p-value uses a finite-n correction; the two agree to a few points.
    assert ours.pvalue == pytest.approx(reference.pvalue, abs=0.03)


@pytest.mark.parametrize("x", np.linspace(0.05, 3.0, 60))
def test_kolmogorov_sf_matches_scipy(x: float, stats) -> None:
    assert ks.kolmogorov_sf(x) == pytest.approx(stats.kstwobign.sf(x), rel=1e-9, abs=1e-15)

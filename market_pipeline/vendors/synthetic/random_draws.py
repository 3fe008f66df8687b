"""The synthetic market's random draws: a xoshiro256** generator held in a uint64[4] array (its
stream defined here, so a seed gives the same day on every machine, and two simulations in one
process cannot disturb each other), the distributions the simulator draws from it, and the
snapshots' receive latency, a hash of the snapshot seed and the snapshot's grid slot."""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from market_pipeline.vendors.synthetic.market_layout import F_LAT_MU, F_LAT_SIGMA, I_LAT_MAX, I_SNAP_SEED


@njit(cache=True, nogil=True, inline="always")
def _rotl(x, k):
    return (x << np.uint64(k)) | (x >> np.uint64(64 - k))


@njit(cache=True, nogil=True)
def next_u64(s):
    result = _rotl(s[1] * np.uint64(5), 7) * np.uint64(9)
    t = s[1] << np.uint64(17)
    s[2] ^= s[0]
    s[3] ^= s[1]
    s[1] ^= s[2]
    s[0] ^= s[3]
    s[2] ^= t
    s[3] = _rotl(s[3], 45)
    return result


@njit(cache=True, nogil=True)
def uniform(s):
    """Uniform on the open interval (0, 1), so that its log is finite."""
    return (float(next_u64(s) >> np.uint64(11)) + 0.5) * (1.0 / 9007199254740992.0)


@njit(cache=True, nogil=True)
def normal(s):
    return math.sqrt(-2.0 * math.log(uniform(s))) * math.cos(2.0 * math.pi * uniform(s))


@njit(cache=True, nogil=True)
def geometric(s, mean):
    """Non-negative integer with the given mean, decaying geometrically."""
    return int(math.floor(math.log(uniform(s)) / math.log(mean / (mean + 1.0))))


@njit(cache=True, nogil=True)
def lognormal_lots(s, mu, sigma):
    return max(1, int(round(math.exp(mu + sigma * normal(s)))))


@njit(cache=True, nogil=True)
def latency(s, fp, ip):
    return min(ip[I_LAT_MAX], int(math.exp(fp[F_LAT_MU] + fp[F_LAT_SIGMA] * normal(s))))


@njit(cache=True, nogil=True, inline="always")
def _mix64(z):
    """splitmix64's finalizer: a bijection of uint64 whose outputs look independent."""
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


@njit(cache=True, nogil=True, inline="always")
def _open_unit(bits):
    """The top 53 bits of a uint64 as a uniform on the open interval (0, 1), as `uniform` makes it."""
    return (float(bits >> np.uint64(11)) + 0.5) * (1.0 / 9007199254740992.0)


@njit(cache=True, nogil=True)
def snapshot_latency(fp, ip, slot):
    """The receive latency of the snapshot at grid slot `slot` (its instant / SNAPSHOT_GRID_NS):
    a function of the seed and the slot alone, never of the cadence or of what came before."""
    golden = np.uint64(0x9E3779B97F4A7C15)
    key = _mix64(np.uint64(ip[I_SNAP_SEED]) ^ (np.uint64(slot) * golden))
    u1 = _open_unit(_mix64(key + golden))
    u2 = _open_unit(_mix64(key + golden + golden))
    standard_normal = math.sqrt(-2.0 * math.log(u1)) * math.cos(2.0 * math.pi * u2)
    return min(ip[I_LAT_MAX], int(math.exp(fp[F_LAT_MU] + fp[F_LAT_SIGMA] * standard_normal)))

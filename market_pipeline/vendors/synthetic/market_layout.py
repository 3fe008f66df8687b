"""The synthetic market's layout: the slots of its flat state and parameter arrays, the named
tuples the simulator kernel (`simulator.py`) takes and fills, and the parameters of a day."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

LEVELS = 20
LADDER = 1 << 22  # ticks per side ladder; zero pages are never touched, so unused span is free

# Integer state slots (istate).
S_BASE = 0  # tick of ladder index 0
S_BEST_BID = 1
S_BEST_ASK = 2
S_WORST_BID = 3
S_WORST_ASK = 4
S_N_BID = 5
S_N_ASK = 6
S_NEXT_SEQ = 7
S_NEXT_TRADE_ID = 8
S_NEXT_TIME = 9  # origin time of the next message; NO_MORE after the day's last one
S_LAST_RECV = 10
S_NEXT_SNAP = 11  # index of the next vendor snapshot
S_LAST_SNAP_RECV = 12
S_MESSAGES = 13
N_ISTATE = 14

# Integer parameters (iparams), all times in ns since the epoch.
I_DAY_START = 0
I_MSG_END = 1  # no message at or after this origin time, so received times stay in the day
I_SNAP_INTERVAL = 2
I_N_SNAPS = 3
I_LAT_MAX = 4
I_MIN_LEVELS = 5
I_SNAP_SEED = 6  # non-negative: the snapshots' own random stream (see `random_draws.snapshot_latency`)
N_IPARAMS = 7

# Float parameters (fparams).
F_DT_MEAN = 0  # mean ns between messages
F_LAT_MU = 1  # log of the median latency in ns
F_LAT_SIGMA = 2
F_TARGET_LEVELS = 3  # levels a side the add/cancel balance steers towards
F_WINDOW = 4  # ticks from the touch where resting liquidity lives
F_SIZE_MU = 5  # log of the median order size in lots
F_SIZE_SIGMA = 6
F_TRADE_PROB = 7  # per event
F_TRADE_MU = 8  # log of the median taker quantity in lots
F_TRADE_SIGMA = 9
F_REF_SIGMA = 10  # ticks per message of the latent fair-price random walk
F_EVENTS_MEAN = 11  # level events per message
N_FPARAMS = 12


@dataclass(frozen=True)
class MarketParams:
    mid_ticks: int
    target_levels: int
    window_ticks: int
    size_median_lots: float
    trade_median_lots: float
    messages_per_day: float
    first_sequence: int
    first_trade_id: int


class Market(NamedTuple):
    """The simulated market, carried from kernel call to kernel call: the book, the integer state
    (S_* slots), the latent fair price, the random generator and the parameters."""

    bid: np.ndarray  # int64 lots by ladder index (tick - st[S_BASE])
    ask: np.ndarray
    st: np.ndarray  # int64, S_* slots
    fstate: np.ndarray  # float64 [latent fair price in ladder-index units]
    rng: np.ndarray  # uint64[4], xoshiro256** state
    ip: np.ndarray  # int64 parameters, I_* slots
    fp: np.ndarray  # float64 parameters, F_* slots


class Deltas(NamedTuple):
    """Level updates, one row each; rows sharing a sequence number are one message."""

    origin: np.ndarray  # int64 ns
    recv: np.ndarray  # int64 ns
    seq: np.ndarray  # int64
    bid: np.ndarray  # bool
    tick: np.ndarray  # int64
    size: np.ndarray  # int64 lots, absolute (0 removes the level)


class Trades(NamedTuple):
    """Trades, one print each."""

    origin: np.ndarray
    recv: np.ndarray
    buy: np.ndarray  # bool: the taker bought
    tick: np.ndarray
    qty: np.ndarray  # int64 lots
    id: np.ndarray  # int64


class Snapshots(NamedTuple):
    """The vendor's top-LEVELS snapshots; an absent level has size 0."""

    origin: np.ndarray
    recv: np.ndarray
    seq: np.ndarray  # the last message a snapshot shows
    bid_tick: np.ndarray  # (LEVELS, n): level-major so that each level is a contiguous column
    bid_size: np.ndarray
    ask_tick: np.ndarray
    ask_size: np.ndarray


class Tops(NamedTuple):
    """The true best bid and ask after each message, one row a message (what an exchange's
    top-of-book stream, Binance's bookTicker, would show)."""

    seq: np.ndarray  # the message's sequence number
    bid_tick: np.ndarray
    bid_size: np.ndarray  # lots
    ask_tick: np.ndarray
    ask_size: np.ndarray


class Block(NamedTuple):
    """The kernel's output buffers (`run` fills them from the start at every call), and each block
    `simulate` yields: a copy of what one call filled."""

    deltas: Deltas
    trades: Trades
    snapshots: Snapshots
    tops: Tops

    def head(self, n_rows: int, n_trades: int, n_snaps: int, n_tops: int) -> Block:
        """The first rows of each buffer, copied: the kernel refills the buffers at its next call."""
        return Block(
            Deltas(*(a[:n_rows].copy() for a in self.deltas)),
            Trades(*(a[:n_trades].copy() for a in self.trades)),
            Snapshots(
                *(a[:n_snaps].copy() for a in self.snapshots[:3]), *(a[:, :n_snaps].copy() for a in self.snapshots[3:])
            ),
            Tops(*(a[:n_tops].copy() for a in self.tops)),
        )

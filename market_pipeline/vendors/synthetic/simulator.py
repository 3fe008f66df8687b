"""Numba kernel of the synthetic market: one true order book evolved message by message.

All state is integer ticks and lots in flat arrays (a dense size ladder per side indexed by
``tick - base``, as in hftbacktest v1) so that the kernel holds no Python objects, can stop at
any chunk boundary and resume where it left off, and is exact: the vendor files are a lossless
rendering of these integers.

The random generator is a xoshiro256** held in a uint64[4] array rather than numba's global
``np.random`` (`random_draws.py`).

The kernel's arguments are named tuples of those arrays (`market_layout.py`): the `Market` it
evolves (book, state, generator, parameters) and the `Block` of output buffers it fills
(`Deltas`, `Trades`, `Snapshots`); `simulate` builds both once and yields a copy of each call's
filled head.

Vendor snapshots draw nothing from that stream: a snapshot's receive latency is a hash of the
day's snapshot seed and its instant on the 100 ms grid. So the snapshot cadence leaves the
messages untouched, and a day with snapshots every 1 s is exactly every tenth snapshot of the
same day with snapshots every 100 ms (tests use coarse cadences; production keeps 100 ms).
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
from numba import njit

from market_pipeline.vendors.synthetic.cadence import DAY_NS, SNAPSHOT_GRID_NS, check_snapshot_interval
from market_pipeline.vendors.synthetic.market_layout import (
    F_DT_MEAN,
    F_EVENTS_MEAN,
    F_LAT_MU,
    F_LAT_SIGMA,
    F_REF_SIGMA,
    F_SIZE_MU,
    F_SIZE_SIGMA,
    F_TARGET_LEVELS,
    F_TRADE_MU,
    F_TRADE_PROB,
    F_TRADE_SIGMA,
    F_WINDOW,
    I_DAY_START,
    I_LAT_MAX,
    I_MIN_LEVELS,
    I_MSG_END,
    I_N_SNAPS,
    I_SNAP_INTERVAL,
    I_SNAP_SEED,
    LADDER,
    LEVELS,
    N_FPARAMS,
    N_IPARAMS,
    N_ISTATE,
    S_BASE,
    S_BEST_ASK,
    S_BEST_BID,
    S_LAST_RECV,
    S_LAST_SNAP_RECV,
    S_MESSAGES,
    S_N_ASK,
    S_N_BID,
    S_NEXT_SEQ,
    S_NEXT_SNAP,
    S_NEXT_TIME,
    S_NEXT_TRADE_ID,
    S_WORST_ASK,
    S_WORST_BID,
    Block,
    Deltas,
    Market,
    MarketParams,
    Snapshots,
    Tops,
    Trades,
)
from market_pipeline.vendors.synthetic.random_draws import (
    geometric,
    latency,
    lognormal_lots,
    normal,
    snapshot_latency,
    uniform,
)

NO_MORE = np.iinfo(np.int64).max
LATENCY_MAX_NS = 90_000_000  # < one grid step: a snapshot is received before the next one is taken
MAX_ROWS_PER_MESSAGE = 10
MAX_TRADES_PER_MESSAGE = 64
_ROW_GUARD = MAX_ROWS_PER_MESSAGE - 2  # a trade event can add up to 3 rows to a message
_TRADE_LEVELS = 3
_INSIDE_PROB = 0.35  # chance, when the spread is open, that an event improves the touch
_NEAR_PROB = 0.7  # share of adds/cancels placed near the touch rather than anywhere in the window
_NEAR_MEAN_TICKS = 6.0
_REF_LEASH = 40.0  # ticks the fair price may run ahead of the book
_BIAS_TICKS = 4.0  # fair-price lead that makes buying e times likelier than selling


@njit(cache=True, nogil=True)
def _emit(d_bid, d_tick, d_size, row_start, n_rows, is_bid, tick, size):
    """Record a level's new absolute size; a level touched twice in a message keeps one row."""
    for r in range(row_start, n_rows):
        if d_tick[r] == tick and d_bid[r] == is_bid:
            d_size[r] = size
            return n_rows
    d_bid[n_rows] = is_bid
    d_tick[n_rows] = tick
    d_size[n_rows] = size
    return n_rows + 1


@njit(cache=True, nogil=True)
def _side_slots(is_bid):
    """(best slot, worst slot, count slot, step from the touch towards depth)."""
    if is_bid:
        return S_BEST_BID, S_WORST_BID, S_N_BID, -1
    return S_BEST_ASK, S_WORST_ASK, S_N_ASK, 1


@njit(cache=True, nogil=True)
def _scan(book, start, step):
    j = start
    while book[j] == 0:
        j += step
    return j


@njit(cache=True, nogil=True)
def _remove_level(book, st, is_bid, idx):
    best_slot, worst_slot, n_slot, step = _side_slots(is_bid)
    book[idx] = 0
    st[n_slot] -= 1
    if idx == st[best_slot]:
        st[best_slot] = _scan(book, idx + step, step)
    if idx == st[worst_slot]:
        st[worst_slot] = _scan(book, idx - step, -step)


@njit(cache=True, nogil=True)
def _add_level(book, st, is_bid, idx, qty):
    """Add qty lots at idx (never better than the side's best unless the caller checked)."""
    best_slot, worst_slot, n_slot, step = _side_slots(is_bid)
    if book[idx] == 0:
        st[n_slot] += 1
        if (idx - st[worst_slot]) * step > 0:
            st[worst_slot] = idx
        if (st[best_slot] - idx) * step > 0:
            st[best_slot] = idx
    book[idx] += qty
    return book[idx]


@njit(cache=True, nogil=True)
def init_book(market, mid_idx):
    """Lay out a resting book of about F_TARGET_LEVELS levels a side around mid_idx."""
    bid, ask, st, fp, rng = market.bid, market.ask, market.st, market.fp, market.rng
    n_levels = int(fp[F_TARGET_LEVELS])
    gap_mean = fp[F_WINDOW] / fp[F_TARGET_LEVELS] - 1.0
    idx = mid_idx
    for _ in range(n_levels):
        bid[idx] = lognormal_lots(rng, fp[F_SIZE_MU], fp[F_SIZE_SIGMA])
        st[S_WORST_BID] = idx
        idx -= 1 + geometric(rng, gap_mean)
    idx = mid_idx + 1
    for _ in range(n_levels):
        ask[idx] = lognormal_lots(rng, fp[F_SIZE_MU], fp[F_SIZE_SIGMA])
        st[S_WORST_ASK] = idx
        idx += 1 + geometric(rng, gap_mean)
    st[S_BEST_BID] = mid_idx
    st[S_BEST_ASK] = mid_idx + 1
    st[S_N_BID] = n_levels
    st[S_N_ASK] = n_levels


@njit(cache=True, nogil=True)
def _snapshot(book, st, is_bid, k, out_tick, out_size):
    best_slot, worst_slot, _, step = _side_slots(is_bid)
    j = st[best_slot]
    end = st[worst_slot] + step
    level = 0
    while level < LEVELS and j != end:
        if book[j] != 0:
            out_tick[level, k] = st[S_BASE] + j
            out_size[level, k] = book[j]
            level += 1
        j += step
    while level < LEVELS:
        out_tick[level, k] = 0
        out_size[level, k] = 0  # no level: rendered as null
        level += 1


@njit(cache=True, nogil=True)
def run(market, chunk_end, out):
    """Advance the `market` (a `Market`) until chunk_end (ns, exclusive) or until a buffer of
    `out` (a `Block`) is full.

    Returns (delta rows, trades, snapshots, tops, done); done is False when a buffer filled up
    and the caller must drain the buffers and call again with the same chunk_end. A message has
    one top and at least one delta row, so the tops never outnumber the rows.
    """
    # The groups' fields as locals, once: read through the tuples in the loop they would be
    # reference-counted at every access.
    bid, ask, st, rng, ip, fp = market.bid, market.ask, market.st, market.rng, market.ip, market.fp
    d, s = out.deltas, out.snapshots
    d_origin, d_recv, d_seq, d_bid, d_tick, d_size = d.origin, d.recv, d.seq, d.bid, d.tick, d.size
    s_origin, s_recv, s_seq = s.origin, s.recv, s.seq
    s_bid_tick, s_bid_size, s_ask_tick, s_ask_size = s.bid_tick, s.bid_size, s.ask_tick, s.ask_size
    top_seq, top_bid_tick, top_bid_size = out.tops.seq, out.tops.bid_tick, out.tops.bid_size
    top_ask_tick, top_ask_size = out.tops.ask_tick, out.tops.ask_size
    trade_capacity = len(out.trades.origin)
    n_rows = 0
    n_trades = 0
    n_snaps = 0
    n_tops = 0
    while True:
        t = st[S_NEXT_TIME]
        # A snapshot at time s shows every message with origin_time <= s.
        while st[S_NEXT_SNAP] < ip[I_N_SNAPS]:
            snap_t = ip[I_DAY_START] + st[S_NEXT_SNAP] * ip[I_SNAP_INTERVAL]
            if snap_t >= t or snap_t >= chunk_end:
                break
            if n_snaps == len(s_origin):
                return n_rows, n_trades, n_snaps, n_tops, False
            s_origin[n_snaps] = snap_t
            slot = (snap_t - ip[I_DAY_START]) // SNAPSHOT_GRID_NS
            recv = max(st[S_LAST_SNAP_RECV], snap_t + snapshot_latency(fp, ip, slot))
            s_recv[n_snaps] = recv
            st[S_LAST_SNAP_RECV] = recv
            s_seq[n_snaps] = st[S_NEXT_SEQ] - 1
            _snapshot(bid, st, True, n_snaps, s_bid_tick, s_bid_size)
            _snapshot(ask, st, False, n_snaps, s_ask_tick, s_ask_size)
            n_snaps += 1
            st[S_NEXT_SNAP] += 1
        if t >= chunk_end:
            return n_rows, n_trades, n_snaps, n_tops, True
        first = st[S_MESSAGES] == 0
        need = st[S_N_BID] + st[S_N_ASK] if first else MAX_ROWS_PER_MESSAGE
        if n_rows + need > len(d_origin) or n_trades + MAX_TRADES_PER_MESSAGE > trade_capacity:
            return n_rows, n_trades, n_snaps, n_tops, False

        recv = max(st[S_LAST_RECV], t + latency(rng, fp, ip))
        st[S_LAST_RECV] = recv
        row_start = n_rows
        if first:
            # The day opens with the whole book as new levels, so a replay from empty is exact.
            base = st[S_BASE]
            j = st[S_BEST_BID]
            while j >= st[S_WORST_BID]:
                if bid[j] != 0:
                    n_rows = _emit(d_bid, d_tick, d_size, n_rows, n_rows, True, base + j, bid[j])
                j -= 1
            j = st[S_BEST_ASK]
            while j <= st[S_WORST_ASK]:
                if ask[j] != 0:
                    n_rows = _emit(d_bid, d_tick, d_size, n_rows, n_rows, False, base + j, ask[j])
                j += 1
        else:
            n_rows, n_trades = _message(market, t, recv, out.deltas, row_start, n_rows, out.trades, n_trades)
        seq = st[S_NEXT_SEQ]
        for r in range(row_start, n_rows):
            d_origin[r] = t
            d_recv[r] = recv
            d_seq[r] = seq
        st[S_NEXT_SEQ] = seq + 1
        st[S_MESSAGES] += 1
        # Neither side is ever emptied (`I_MIN_LEVELS`), so both bests are levels of the book.
        top_seq[n_tops] = seq
        top_bid_tick[n_tops] = st[S_BASE] + st[S_BEST_BID]
        top_bid_size[n_tops] = bid[st[S_BEST_BID]]
        top_ask_tick[n_tops] = st[S_BASE] + st[S_BEST_ASK]
        top_ask_size[n_tops] = ask[st[S_BEST_ASK]]
        n_tops += 1

        nxt = t + max(1, int(-math.log(uniform(rng)) * fp[F_DT_MEAN]))
        st[S_NEXT_TIME] = nxt if nxt < ip[I_MSG_END] else NO_MORE


# Inlined into `run`, its one caller: a call would pass every array of its groups with reference
# counting, once per message.
@njit(cache=True, nogil=True, inline="always")
def _message(market, t, recv, deltas, row_start, n_rows, trades, n_trades):
    """One message at origin time t, received at recv: its level rows from `row_start` in `deltas`
    and its trades from `n_trades` in `trades`; returns (rows, trades) after it."""
    bid, ask, st, fstate, rng, fp = market.bid, market.ask, market.st, market.fstate, market.rng, market.fp
    d_bid, d_tick, d_size = deltas.bid, deltas.tick, deltas.size
    t_origin, t_recv, t_buy, t_tick, t_qty, t_id = (
        trades.origin,
        trades.recv,
        trades.buy,
        trades.tick,
        trades.qty,
        trades.id,
    )
    min_levels = market.ip[I_MIN_LEVELS]
    base = st[S_BASE]
    # The latent fair price leads; the book follows it through biased trades and new touches.
    mid = 0.5 * (st[S_BEST_BID] + st[S_BEST_ASK])
    ref = fstate[0] + fp[F_REF_SIGMA] * normal(rng)
    margin = 4.0 * fp[F_WINDOW] + 16.0
    ref = min(max(ref, mid - _REF_LEASH, margin), mid + _REF_LEASH, LADDER - margin)
    fstate[0] = ref
    p_up = 1.0 / (1.0 + math.exp(-(ref - mid) / _BIAS_TICKS))
    window = int(fp[F_WINDOW])
    target = fp[F_TARGET_LEVELS]

    n_events = 1 + min(geometric(rng, fp[F_EVENTS_MEAN] - 1.0), MAX_ROWS_PER_MESSAGE - 1)
    event = 0
    while (event < n_events or n_rows == row_start) and n_rows - row_start < _ROW_GUARD:
        event += 1
        bb = st[S_BEST_BID]
        ba = st[S_BEST_ASK]
        if ba - bb > 1 and uniform(rng) < _INSIDE_PROB:
            # A new best level strictly inside the spread: never locks or crosses.
            is_bid = uniform(rng) < p_up
            gap = ba - bb - 1
            d = min(geometric(rng, 1.0), gap - 1)
            idx = bb + 1 + d if is_bid else ba - 1 - d
            book = bid if is_bid else ask
            size = _add_level(book, st, is_bid, idx, lognormal_lots(rng, fp[F_SIZE_MU], fp[F_SIZE_SIGMA]))
            n_rows = _emit(d_bid, d_tick, d_size, row_start, n_rows, is_bid, base + idx, size)
        elif uniform(rng) < fp[F_TRADE_PROB]:
            is_buy = uniform(rng) < p_up
            book = ask if is_buy else bid
            maker_is_bid = not is_buy
            best_slot, _, n_slot, _ = _side_slots(maker_is_bid)
            remaining = lognormal_lots(rng, fp[F_TRADE_MU], fp[F_TRADE_SIGMA])
            for _ in range(_TRADE_LEVELS):
                idx = st[best_slot]
                available = book[idx]
                if st[n_slot] <= min_levels:
                    available -= 1  # a thin side is traded into but never emptied
                fill = min(remaining, available)
                if fill <= 0:
                    break
                # Several resting orders at one price print as several trades.
                first_print = fill
                if fill >= 2 and uniform(rng) < 0.35:
                    first_print = 1 + int(uniform(rng) * (fill - 1))
                for qty in (first_print, fill - first_print):
                    if qty > 0:
                        t_origin[n_trades] = t
                        t_recv[n_trades] = recv
                        t_buy[n_trades] = is_buy
                        t_tick[n_trades] = base + idx
                        t_qty[n_trades] = qty
                        t_id[n_trades] = st[S_NEXT_TRADE_ID]
                        st[S_NEXT_TRADE_ID] += 1
                        n_trades += 1
                if fill == book[idx]:
                    _remove_level(book, st, maker_is_bid, idx)
                    size = 0
                else:
                    book[idx] -= fill
                    size = book[idx]
                n_rows = _emit(d_bid, d_tick, d_size, row_start, n_rows, maker_is_bid, base + idx, size)
                remaining -= fill
                if remaining == 0:
                    break
        else:
            is_bid = uniform(rng) < 0.5
            book = bid if is_bid else ask
            best_slot, worst_slot, n_slot, step = _side_slots(is_bid)
            n = st[n_slot]
            p_add = min(max(0.5 + 0.5 * (target - n) / target, 0.2), 0.8)
            if uniform(rng) < p_add:
                if uniform(rng) < _NEAR_PROB:
                    d = geometric(rng, _NEAR_MEAN_TICKS)
                else:
                    d = int(uniform(rng) * window)
                idx = min(max(st[best_slot] + step * d, 1), LADDER - 2)
                size = _add_level(book, st, is_bid, idx, lognormal_lots(rng, fp[F_SIZE_MU], fp[F_SIZE_SIGMA]))
            else:
                worst = st[worst_slot]
                if (worst - st[best_slot]) * step > (3 * window) // 2:
                    idx = worst  # liquidity left far behind by the price is withdrawn
                    remove = n > min_levels
                else:
                    if uniform(rng) < _NEAR_PROB:
                        d = geometric(rng, _NEAR_MEAN_TICKS)
                    else:
                        d = int(uniform(rng) * window)
                    idx = st[best_slot] + step * d
                    idx = worst if (idx - worst) * step > 0 else _scan(book, idx, step)
                    remove = n > min_levels and uniform(rng) < 0.5
                if remove or book[idx] == 1:
                    if n <= min_levels:
                        continue
                    _remove_level(book, st, is_bid, idx)
                    size = 0
                else:
                    book[idx] -= 1 + int(uniform(rng) * (book[idx] - 1))
                    size = book[idx]
            n_rows = _emit(d_bid, d_tick, d_size, row_start, n_rows, is_bid, base + idx, size)
    return n_rows, n_trades


def simulate(
    params: MarketParams,
    rng_state: np.ndarray,
    day_start_ns: int,
    snapshot_interval_ns: int = SNAPSHOT_GRID_NS,
    chunk_ns: int = 3_600_000_000_000,
) -> Iterator[Block]:
    """Yield the day's market in blocks of at most chunk_ns of origin time, in order, with a vendor
    snapshot every snapshot_interval_ns (a multiple of SNAPSHOT_GRID_NS that divides the day)."""
    check_snapshot_interval(snapshot_interval_ns)
    day_ns = DAY_NS
    snap_interval = snapshot_interval_ns
    lat_max = LATENCY_MAX_NS  # the last snapshot is received within the day
    ip = np.zeros(N_IPARAMS, dtype=np.int64)
    ip[I_DAY_START] = day_start_ns
    ip[I_MSG_END] = day_start_ns + day_ns - lat_max
    ip[I_SNAP_INTERVAL] = snap_interval
    ip[I_N_SNAPS] = day_ns // snap_interval
    ip[I_LAT_MAX] = lat_max
    ip[I_MIN_LEVELS] = 2 * LEVELS
    ip[I_SNAP_SEED] = int(rng_state.astype(np.uint64)[0] >> np.uint64(1))  # its own stream, non-negative

    fp = np.zeros(N_FPARAMS, dtype=np.float64)
    fp[F_DT_MEAN] = day_ns / params.messages_per_day
    fp[F_LAT_MU] = math.log(15e6)
    fp[F_LAT_SIGMA] = 0.25
    fp[F_TARGET_LEVELS] = params.target_levels
    fp[F_WINDOW] = params.window_ticks
    fp[F_SIZE_MU] = math.log(params.size_median_lots)
    fp[F_SIZE_SIGMA] = 1.0
    fp[F_TRADE_PROB] = 0.0192
    fp[F_TRADE_MU] = math.log(params.trade_median_lots)
    fp[F_TRADE_SIGMA] = 1.3
    fp[F_REF_SIGMA] = 0.6
    fp[F_EVENTS_MEAN] = 3.0

    rng = rng_state.astype(np.uint64).copy()
    st = np.zeros(N_ISTATE, dtype=np.int64)
    base = max(1, params.mid_ticks - LADDER // 2)
    mid_idx = params.mid_ticks - base
    st[S_BASE] = base
    st[S_NEXT_SEQ] = params.first_sequence
    st[S_NEXT_TRADE_ID] = params.first_trade_id
    st[S_NEXT_TIME] = day_start_ns
    book = (np.zeros(LADDER, dtype=np.int64), np.zeros(LADDER, dtype=np.int64))
    market = Market(*book, st, np.array([mid_idx + 0.5], dtype=np.float64), rng, ip, fp)
    init_book(market, mid_idx)

    per_chunk = params.messages_per_day * chunk_ns / day_ns
    row_cap = int(per_chunk * 1.5 * fp[F_EVENTS_MEAN]) + 4 * params.target_levels + 4096
    trade_cap = int(per_chunk * fp[F_EVENTS_MEAN] * fp[F_TRADE_PROB] * 4) + 4096
    snap_cap = chunk_ns // snap_interval + 1
    i8, b1 = np.int64, np.bool_
    buffers = Block(
        Deltas(*(np.empty(row_cap, dtype=t) for t in (i8, i8, i8, b1, i8, i8))),
        Trades(*(np.empty(trade_cap, dtype=t) for t in (i8, i8, b1, i8, i8, i8))),
        Snapshots(
            *(np.empty(snap_cap, dtype=i8) for _ in range(3)),
            *(np.empty((LEVELS, snap_cap), dtype=i8) for _ in range(4)),
        ),
        Tops(*(np.empty(row_cap, dtype=i8) for _ in range(5))),  # a top a message: never more than rows
    )

    for chunk_end in range(day_start_ns + chunk_ns, day_start_ns + day_ns + 1, chunk_ns):
        done = False
        while not done:
            n_rows, n_trades, n_snaps, n_tops, done = run(market, chunk_end, buffers)
            yield buffers.head(n_rows, n_trades, n_snaps, n_tops)

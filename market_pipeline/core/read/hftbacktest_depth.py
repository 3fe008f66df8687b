"""The depth events of a day in our replay's order: the raw deltas in file order, each vendor
snapshot where the rebuild applies it (`core/book/delta_replay.py`: before the first message whose
sequence number is above the snapshot's), as a clear of its price range then its levels, exactly as
the rebuild repairs the book from it.

Local timestamps are the running maximum of the deltas' `received_time` (a snapshot takes the one of
the message before it), so hftbacktest's local processor, which reads events in `local_ts` order,
applies them in our order; exchange timestamps are the rows' `origin_time`.
"""

from __future__ import annotations

from typing import NamedTuple

import numba as nb
import numpy as np

from market_pipeline.core.read.hftbacktest_format import (
    BUY_EVENT,
    DEPTH_CLEAR_EVENT,
    DEPTH_EVENT,
    DEPTH_SNAPSHOT_EVENT,
    SELL_EVENT,
)

# state (int64[2]): the running maximum local_ts, and the next event id
LAST_LOCAL, NEXT_ID = 0, 1


class DepthDeltas(NamedTuple):
    """Raw delta rows in file order."""

    recv: np.ndarray  # int64 received_time
    orig: np.ndarray  # int64 origin_time
    seq: np.ndarray  # int64 sequence_number
    bid: np.ndarray  # bool
    px: np.ndarray  # float64 price
    qty: np.ndarray  # float64 size


class VendorSnapshots(NamedTuple):
    """Vendor snapshots; the level matrices are (rows, levels), an absent level NaN."""

    seq: np.ndarray  # int64 sequence_number
    orig: np.ndarray  # int64 origin_time
    matched: np.ndarray  # bool: the rebuilt book already equalled it
    bp: np.ndarray  # bid prices
    bq: np.ndarray  # bid sizes
    ap: np.ndarray  # ask prices
    aq: np.ndarray  # ask sizes


@nb.njit(cache=True, nogil=True)
def _put(out, n, state, ev, exch, local, px, qty):
    """Event n of `out` (`ScratchEvents`), numbered from the state's next id."""
    out.id[n] = state[NEXT_ID]
    state[NEXT_ID] += 1
    out.ev[n] = ev
    out.exch[n] = exch
    out.local[n] = local
    out.px[n] = px
    out.qty[n] = qty
    return n + 1


@nb.njit(cache=True, nogil=True)
def _snapshot_side(out, n, state, is_bid, exch, local, prices, sizes):
    """A clear of the side down (bids) or up (asks) to its deepest listed level, then the levels."""
    side = BUY_EVENT if is_bid else SELL_EVENT
    levels = 0
    while levels < prices.shape[0] and not np.isnan(prices[levels]):
        levels += 1
    if levels == 0:
        return n
    n = _put(
        out,
        n,
        state,
        np.uint64(DEPTH_CLEAR_EVENT | side),
        exch,
        local,
        prices[levels - 1],
        0.0,
    )
    for lvl in range(levels):
        n = _put(
            out,
            n,
            state,
            np.uint64(DEPTH_SNAPSHOT_EVENT | side),
            exch,
            local,
            prices[lvl],
            sizes[lvl],
        )
    return n


@nb.njit(cache=True, nogil=True)
def depth_events(deltas, snaps, deltas_final, snaps_final, state, out):
    """Events of a batch of `DepthDeltas` and a batch of `VendorSnapshots`, into `out`
    (`hftbacktest_format.ScratchEvents`). Returns (deltas used, snapshots used, events written);
    stops early when `out` might not hold the next snapshot or when a batch runs out while its
    stream has more."""
    d_recv, d_orig, d_seq, d_bid, d_px, d_qty = deltas.recv, deltas.orig, deltas.seq, deltas.bid, deltas.px, deltas.qty
    s_seq, s_orig, s_matched = snaps.seq, snaps.orig, snaps.matched
    s_bp, s_bq, s_ap, s_aq = snaps.bp, snaps.bq, snaps.ap, snaps.aq
    cap = out.id.shape[0] - 2 * (s_bp.shape[1] + 1)
    n_d = d_recv.shape[0]
    n_s = s_seq.shape[0]
    i = 0
    k = 0
    n = 0
    while n < cap:
        if k < n_s and ((i < n_d and d_seq[i] > s_seq[k]) or (i >= n_d and deltas_final)):
            if s_matched[k]:  # the rebuilt book already equalled it: nothing changed
                k += 1
                continue
            local = state[LAST_LOCAL]
            n = _snapshot_side(out, n, state, True, s_orig[k], local, s_bp[k], s_bq[k])
            n = _snapshot_side(out, n, state, False, s_orig[k], local, s_ap[k], s_aq[k])
            k += 1
            continue
        if i >= n_d or (k >= n_s and not snaps_final):
            break
        if d_recv[i] > state[LAST_LOCAL]:
            state[LAST_LOCAL] = d_recv[i]
        side = BUY_EVENT if d_bid[i] else SELL_EVENT
        n = _put(
            out,
            n,
            state,
            np.uint64(DEPTH_EVENT | side),
            d_orig[i],
            state[LAST_LOCAL],
            d_px[i],
            d_qty[i],
        )
        i += 1
    return i, k, n

"""hftbacktest's event format (its documented numpy structured array, hftbacktest.types), written
without importing hftbacktest: the export needs numpy only, the package is a test dependency.

An event is a row of EVENT_DTYPE: `ev` (kind | side | which processor sees it), `exch_ts` and
`local_ts` (ns), `px`, `qty`; `order_id`, `ival`, `fval` unused here (0). Events flagged EXCH_EVENT
must be in `exch_ts` order, those flagged LOCAL_EVENT in `local_ts` order; an event seen by both in
one position carries both flags, otherwise it is written twice, once per flag (what
hftbacktest.data.validation.correct_event_order does in memory; `merge_orders` does it in batches).
"""

from __future__ import annotations

from typing import NamedTuple

import numba as nb
import numpy as np

DEPTH_EVENT = 1
TRADE_EVENT = 2
DEPTH_CLEAR_EVENT = 3
DEPTH_SNAPSHOT_EVENT = 4
EXCH_EVENT = 1 << 31
LOCAL_EVENT = 1 << 30
BUY_EVENT = 1 << 29
SELL_EVENT = 1 << 28

EVENT_DTYPE = np.dtype(
    [
        ("ev", "u8"),
        ("exch_ts", "i8"),
        ("local_ts", "i8"),
        ("px", "f8"),
        ("qty", "f8"),
        ("order_id", "u8"),
        ("ival", "i8"),
        ("fval", "f8"),
    ],
    align=True,
)


class ScratchEvents(NamedTuple):
    """Events before the merge, one column each, every event with a unique id."""

    id: np.ndarray  # int64
    ev: np.ndarray  # uint64: kind | side
    exch: np.ndarray  # int64 exch_ts
    local: np.ndarray  # int64 local_ts
    px: np.ndarray  # float64
    qty: np.ndarray  # float64


@nb.njit(cache=True, nogil=True)
def merge_orders(local, exch, l_final, e_final, out):
    """Merge a batch of the events in local order with a batch in exchange order (`ScratchEvents`
    both). Heads with the same id become one event seen by both processors; otherwise the head
    earlier on its own clock goes out with its one flag. Stops when `out` is full or a batch runs
    out while its stream has more (`*_final` false). Returns (local used, exch used, written)."""
    l_id, l_ev, l_exch, l_local, l_px, l_qty = local.id, local.ev, local.exch, local.local, local.px, local.qty
    e_id, e_ev, e_exch, e_local, e_px, e_qty = exch.id, exch.ev, exch.exch, exch.local, exch.px, exch.qty
    a = 0
    b = 0
    n = 0
    na = l_id.shape[0]
    nb_ = e_id.shape[0]
    cap = out.shape[0]
    while n < cap:
        have_l = a < na
        have_e = b < nb_
        if (not have_l and not l_final) or (not have_e and not e_final) or (not have_l and not have_e):
            break
        if have_l and have_e and l_id[a] == e_id[b]:
            flags, take_l = np.uint64(EXCH_EVENT | LOCAL_EVENT), True
        elif have_e and (not have_l or e_exch[b] < l_exch[a]):
            flags, take_l = np.uint64(EXCH_EVENT), False
        else:
            flags, take_l = np.uint64(LOCAL_EVENT), True
        row = out[n]
        if take_l:
            row["ev"] = l_ev[a] | flags
            row["exch_ts"], row["local_ts"], row["px"], row["qty"] = l_exch[a], l_local[a], l_px[a], l_qty[a]
        else:
            row["ev"] = e_ev[b] | flags
            row["exch_ts"], row["local_ts"], row["px"], row["qty"] = e_exch[b], e_local[b], e_px[b], e_qty[b]
        row["order_id"], row["ival"], row["fval"] = 0, 0, 0.0
        if flags == np.uint64(EXCH_EVENT | LOCAL_EVENT):
            a += 1
            b += 1
        elif take_l:
            a += 1
        else:
            b += 1
        n += 1
    return a, b, n

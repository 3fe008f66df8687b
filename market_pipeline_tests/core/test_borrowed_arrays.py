"""`borrowed`: views of the same data that own no reference, for arrays and (named, nested) tuples."""

from __future__ import annotations

import sys
from typing import NamedTuple

import numba as nb
import numpy as np
from numba.core import cgutils, types
from numba.extending import intrinsic

from market_pipeline.core.borrowed_arrays import borrowed


@intrinsic
def _owns_reference(typingctx, array):
    """Whether `array` has a meminfo: what numba counts references on (a borrowed view has none)."""

    def codegen(context, builder, signature, args):
        view = context.make_array(array)(context, builder, value=args[0])
        return builder.icmp_unsigned("!=", view.meminfo, cgutils.get_null_value(view.meminfo.type))

    return types.boolean(array), codegen


class Group(NamedTuple):
    levels: np.ndarray
    state: np.ndarray  # a record array, as the kernels' named state
    depth: int
    pair: tuple  # (array, array): nested


_STATE = np.dtype([("count", np.int64), ("live", np.bool_)])


@nb.njit
def _borrow_and_write(column, group):
    owned = (_owns_reference(column), _owns_reference(group.levels), _owns_reference(group.pair[1]))
    column, group = borrowed(column), borrowed(group)
    column[0] = 7
    group.levels[1, 0] = group.depth
    group.state[0].count += 1
    group.pair[1][2] = 5.5
    views = (
        _owns_reference(column),
        _owns_reference(group.levels),
        _owns_reference(group.state),
        _owns_reference(group.pair[0]),
        _owns_reference(group.pair[1]),
    )
    return owned, views, column.sum(), group.levels.shape


def test_borrowed_views_share_the_data_and_own_no_reference():
    column = np.arange(4, dtype=np.int64)
    levels = np.zeros((2, 3), dtype=np.int64)
    state = np.zeros(1, _STATE)
    pair = (np.ones(2, dtype=np.int64), np.zeros(3))
    group = Group(levels, state, 20, pair)
    before = [sys.getrefcount(a) for a in (column, levels, state, *pair)]

    owned, views, total, shape = _borrow_and_write(column, group)

    assert owned == (True, True, True)  # the arguments as numba holds them: counted
    assert views == (False, False, False, False, False)  # the borrowed views: nothing to count
    # The same memory, shapes and strides (a 2-d array and a record included), written through.
    assert column.tolist() == [7, 1, 2, 3] and total == 13
    assert shape == (2, 3) and levels[1, 0] == 20
    assert state[0]["count"] == 1
    assert pair[1].tolist() == [0.0, 0.0, 5.5]
    assert [sys.getrefcount(a) for a in (column, levels, state, *pair)] == before  # nothing leaked


@nb.njit
def _borrow_scalar(value):
    return borrowed(value) + 1


def test_a_scalar_passes_through():
    assert _borrow_scalar(41) == 42

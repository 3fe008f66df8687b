"""`ReusedArrays`: a buffer is handed out again only once no array, polars series or Arrow array
refers to its memory any more, and at most `buffers` are kept."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import polars as pl
import pyarrow as pa

from market_pipeline.core.reused_arrays import PerThreadArrays, ReusedArrays


def _address(array: np.ndarray) -> int:
    return array.__array_interface__["data"][0]


def test_a_buffer_comes_back_once_its_array_is_gone():
    arrays = ReusedArrays(2)
    first = arrays.empty(1000, np.int64)
    at = _address(first)
    first[:] = 7
    second = arrays.empty(1000, np.int64)
    assert not np.shares_memory(first, second)
    del first
    again = arrays.empty(1000, np.int64)
    assert _address(again) == at


def test_any_view_keeps_its_buffer_out_of_turn():
    """Views of views, reshaped and retyped views, a polars series and an Arrow array sharing the
    memory: each keeps the buffer busy, and none of their values change."""
    keepers = {
        "slice of a slice": lambda a: a[2:][3:],
        "retyped": lambda a: a.view(np.uint8),
        "reshaped": lambda a: a.reshape(10, 100),
        "polars": lambda a: pl.Series("x", a[:500]),
        "arrow": lambda a: pa.array(a),
    }
    for name, keep in keepers.items():
        arrays = ReusedArrays(1)
        array = arrays.empty(1000, np.int64)
        array[:] = np.arange(1000)
        kept = keep(array)
        before = np.asarray(kept).copy()
        del array
        for _ in range(3):
            fresh = arrays.empty(1000, np.int64)
            fresh[:] = -1
            assert not np.shares_memory(fresh, np.asarray(kept)), name
        np.testing.assert_array_equal(np.asarray(kept), before, err_msg=name)
        del kept, fresh
        assert len({_address(arrays.empty(1000, np.int64)) for _ in range(3)}) == 1, name  # free again


def test_shapes_types_and_zeros():
    arrays = ReusedArrays(4)
    matrix = arrays.empty((25, 20), np.int64)
    assert matrix.shape == (25, 20) and matrix.dtype == np.int64
    assert matrix.flags.c_contiguous and matrix.flags.aligned and matrix.flags.writeable
    matrix[:] = 5
    del matrix
    flags = arrays.zeros(4000, np.bool_)  # in the memory the matrix left, cleared
    assert flags.dtype == np.bool_ and not flags.any()
    assert arrays.empty((0, 20), np.int64).shape == (0, 20)


def test_at_most_so_many_buffers_are_kept_and_a_larger_array_replaces_a_small_buffer():
    arrays = ReusedArrays(2)
    held = [arrays.empty(100, np.int64) for _ in range(3)]  # the third is the allocator's
    addresses = [_address(a) for a in held]
    del held
    again = [arrays.empty(100, np.int64) for _ in range(3)]
    assert len({_address(a) for a in again[:2]} & set(addresses[:2])) == 2
    assert _address(again[2]) not in addresses[:2]
    del again
    # No kept buffer is large enough: a free one is replaced, and kept. (Blocks this large get
    # fresh, zeroed pages from the kernel: the values left in it show it came back.)
    large = arrays.empty(1 << 20, np.int64)
    large[:] = 7
    del large
    assert (arrays.empty(1 << 20, np.int64) == 7).all()


def test_no_room_means_fresh_arrays():
    arrays = ReusedArrays(0)
    first, second = arrays.empty(100, np.int64), arrays.empty(100, np.int64)
    first[:], second[:] = 1, 2
    assert not np.shares_memory(first, second)
    assert (first == 1).all() and (second == 2).all()


def test_each_thread_has_arrays_of_its_own():
    """Two threads never take the same free buffer at once: each asks its own `ReusedArrays`."""
    per_thread = PerThreadArrays(2)
    with ThreadPoolExecutor(2) as pool:
        barrier = threading.Barrier(2)

        def mine():
            barrier.wait()  # both threads alive at once: two threads, not one twice
            return per_thread.mine(), per_thread.mine()

        (a, a_again), (b, b_again) = (future.result() for future in [pool.submit(mine) for _ in range(2)])
    assert a is a_again and b is b_again and a is not b


def test_a_free_buffer_large_enough_is_taken_before_a_small_one_is_replaced():
    arrays = ReusedArrays(2)
    small, large = arrays.empty(100, np.int64), arrays.empty(1 << 20, np.int64)
    large[:] = 7
    del small, large
    # The small buffer comes first and is free, but the large one fits: it comes back (the values
    # left in it show it; a block this large would otherwise get fresh, zeroed pages).
    assert (arrays.empty(1 << 20, np.int64) == 7).all()

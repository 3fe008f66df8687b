"""Every caller hands the replay kernels output buffers of the rebuild's type, so numba compiles
each kernel once (about 10 CPU-s for the capture's, 11 for the lake's) and not again for buffers
of one level (the agreement's message books, the bench's core), or of no rows (verify-capture):
numba types an array that is C- and F-contiguous alike as C."""

from __future__ import annotations

from decimal import Decimal
from types import SimpleNamespace

import numba

from market_pipeline.bench.kernel import _CoreReplay
from market_pipeline.core.book import delta_replay as lr
from market_pipeline.core.book.book_writer import BookWriter
from market_pipeline.core.book.rebuild import OUTPUT_BATCH_ROWS, Grid

GRID = Grid(Decimal("0.01"), Decimal("0.001"))


def test_every_callers_output_buffers_have_the_rebuilds_type():
    rebuild = numba.typeof(BookWriter(20, GRID, 0, OUTPUT_BATCH_ROWS).buffers)
    assert str(rebuild.types[-1]) == "array(int64, 2d, F)"
    assert numba.typeof(BookWriter(1, GRID, 0, OUTPUT_BATCH_ROWS).buffers) == rebuild  # the agreement's
    assert numba.typeof(lr.no_rows()) == rebuild  # verify-capture's
    assert numba.typeof(_CoreReplay().rows) == rebuild  # the bench core's best bid and ask
    assert numba.typeof(lr.new_rows(2, 3)) == rebuild


def test_no_rows_has_no_room_and_a_one_level_writer_writes_one_level():
    assert all(len(column) == 0 for column in lr.no_rows()[:5])  # the kernels' capacity: none
    handed = []
    sink = SimpleNamespace(add=lambda rows, recv, sides, day_start: handed.append(sides))
    writer = BookWriter(1, GRID, 0, 4, sink)
    writer.buffers.recv[:2] = writer.buffers.orig[:2] = writer.buffers.seq[:2] = (1, 2)
    writer.buffers.synced[:2], writer.buffers.trigger[:2] = True, lr.TRIGGER_SNAPSHOT
    for levels, value in zip(writer.buffers[5:], (100, 5, 101, 7), strict=True):
        levels[:2, 0], levels[:2, 1] = value, -9  # level 1: room the kernels never write
    batch = writer.detach(2)()
    assert batch.schema.names[-4:] == ["bid_0_price", "bid_0_size", "ask_0_price", "ask_0_size"]
    assert batch.column("bid_0_price").to_pylist() == [Decimal("1.00")] * 2
    assert batch.column("ask_0_size").to_pylist() == [Decimal("0.007")] * 2
    (sides,) = handed  # the book shape's view of the snapshot rows: one level, two rows
    assert [side.tolist() for side in sides[::2]] == [[[100, 100]], [[5, 5]], [[101, 101]], [[7, 7]]]


def test_the_rank_kernel_gets_one_type_of_ladders_from_the_rebuild_and_the_pass():
    """The snapshot ladders the rebuild hands the delta pass (`BookWriter`, a gather of its
    column-major buffers) and those the metrics' pass reads (`update_ranks.HourLadders`, also
    before the day's first snapshot) are C-ordered int64 matrices alike: numba compiles
    `add_ranks` once for both."""
    import numpy as np

    from market_pipeline.core.quality.update_ranks import HourLadders, Ladders

    handed = []
    sink = SimpleNamespace(snapshots=lambda received, bids, asks: handed.append((received, bids, asks)))
    writer = BookWriter(20, GRID, 0, 8, None, sink)
    writer.buffers.trigger[:8] = [lr.TRIGGER_SNAPSHOT, lr.TRIGGER_INTERVAL] * 4
    for levels in writer.buffers[5:]:
        levels[:8] = 1
    writer.detach(8)()
    ((received, bids, asks),) = handed
    assert bids.shape == asks.shape == (20, 4)
    spare = Ladders(np.zeros(5, np.int64), np.zeros((20, 5), np.int64), np.zeros((20, 5), np.int64))
    for ladders in (HourLadders(spare).after(None), HourLadders(spare).after(Ladders(*(c[..., :1] for c in spare)))):
        assert numba.typeof(ladders.bids) == numba.typeof(bids) == numba.typeof(asks) == numba.typeof(ladders.asks)
        assert numba.typeof(ladders.times) == numba.typeof(received)

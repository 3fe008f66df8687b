"""Which messages break a capture's update-id chain (`update_chain.message_breaks`): the rule on a
few messages of each style, and the same answer however the rows are cut into batches."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from market_pipeline.core.update_chain import ChainCarry, message_breaks

_START = ChainCarry()  # nothing before the batch


def _breaks(rows: list[tuple[int, int, int, int | None]], carry: ChainCarry = _START):
    """message_breaks of rows (line_no, u, U, pu or None)."""
    line, u, first, prev = (np.array([r[k] or 0 for r in rows], dtype=np.int64) for k in range(4))
    valid = np.array([r[3] is not None for r in rows], dtype=np.bool_)
    return message_breaks(line, u, first, prev, valid, carry)


def test_each_style_breaks_where_its_rule_fails():
    rows = [
        (0, 10, 9, None),  # the first of all: breaks nothing
        (0, 10, 9, None),  # a second level row of the same message
        (1, 12, 11, None),  # spot: U == previous u + 1
        (2, 15, 14, None),  # spot: U != 13: a break
        (3, 20, 16, 15),  # futures: pu == previous u
        (4, 22, 21, 19),  # futures: pu != 20: a break
    ]
    result = _breaks(rows)
    assert result.head.tolist() == [True, False, True, True, True, True]
    assert result.previous.tolist() == [-1, 10, 12, 15, 20]
    assert result.futures.tolist() == [False, False, False, True, True]
    assert result.broken.tolist() == [False, False, True, False, True]
    assert result.carry == ChainCarry(4, 22)


def test_the_batch_before_carries_the_last_message():
    going_on = _breaks([(7, 28, 27, None), (8, 30, 29, None), (9, 33, 32, None)], ChainCarry(7, 28))
    assert going_on.head.tolist() == [False, True, True]  # line 7 goes on from the batch before
    assert going_on.previous.tolist() == [28, 30]
    assert going_on.broken.tolist() == [False, True]  # 29 == 28 + 1; 32 != 30 + 1
    nothing_new = _breaks([(7, 28, 27, None)], ChainCarry(7, 28))
    assert len(nothing_new.broken) == 0 and nothing_new.carry == ChainCarry(7, 28)


_MESSAGE = st.tuples(st.integers(1, 3), st.integers(0, 3), st.booleans(), st.integers(-1, 1))


@settings(max_examples=200, deadline=None)
@given(messages=st.lists(_MESSAGE, min_size=1, max_size=12), cut=st.integers(0, 40))
def test_the_answer_does_not_depend_on_where_the_batches_are_cut(messages, cut):
    rows, u = [], 100
    for line, (levels, step, futures, slip) in enumerate(messages):
        first = u + 1 + (0 if futures else slip)
        u = first + step
        rows += [(line, u, first, (u - step - 1 + slip) if futures else None)] * levels
    whole = _breaks(rows)
    cut = min(cut, len(rows))
    before = _breaks(rows[:cut])
    after = _breaks(rows[cut:], before.carry)
    assert np.concatenate([before.head, after.head]).tolist() == whole.head.tolist()
    assert np.concatenate([before.broken, after.broken]).tolist() == whole.broken.tolist()
    assert np.concatenate([before.previous, after.previous]).tolist() == whole.previous.tolist()
    assert after.carry == whole.carry


def test_spot_rows_may_leave_prev_update_id_out():
    """No `prev_update_id` at all (empty arrays, a spot capture's chunks) reads as all of it null."""
    rows = [(0, 10, 9, None), (1, 12, 11, None), (2, 15, 14, None), (2, 15, 14, None), (3, 16, 16, None)]
    line, u, first = (np.array([r[k] for r in rows], dtype=np.int64) for k in range(3))
    empty = message_breaks(line, u, first, np.zeros(0, np.int64), np.zeros(0, np.bool_), _START)
    filled = _breaks(rows)
    for field in ("head", "previous", "futures", "broken"):
        assert getattr(empty, field).tolist() == getattr(filled, field).tolist()
    assert empty.broken.tolist() == [False, False, True, False] and empty.carry == filled.carry


@settings(max_examples=100, deadline=None)
@given(messages=st.lists(_MESSAGE, min_size=2, max_size=12), cuts=st.lists(st.integers(0, 40), max_size=3))
def test_chain_breaks_of_glued_batches_equal_those_of_the_whole(messages, cuts):
    """`ChainBreaks` reads a batch chunk by chunk (one glued from several by `message_aligned`):
    the events equal those of the same rows in one chunk, spot-style chunks (prev_update_id all
    null) among futures-style ones too."""
    import polars as pl

    from market_pipeline.core.quality.chain import CHAIN_COLUMNS, ChainBreaks, chain_breaks

    rows, u = [], 100
    for line, (levels, step, futures, slip) in enumerate(messages):
        first = u + 1 + (0 if futures else slip)
        u = first + step
        rows += [(line, u, first, (u - step - 1 + slip) if futures else None)] * levels
    frame = pl.DataFrame(
        {
            "received_time": np.arange(len(rows), dtype=np.int64),
            "origin_time": np.arange(len(rows), dtype=np.int64) - 5,
            "sequence_number": [r[1] for r in rows],
            "first_update_id": [r[2] for r in rows],
            "prev_update_id": pl.Series([r[3] for r in rows], dtype=pl.Int64),
            "line_no": [r[0] for r in rows],
        }
    ).select(CHAIN_COLUMNS)
    bounds = sorted({0, len(rows), *(min(c, len(rows)) for c in cuts)})
    glued = pl.concat([frame.slice(a, b - a) for a, b in zip(bounds, bounds[1:], strict=False)], rechunk=False)
    breaks = ChainBreaks()
    breaks.add(glued)
    assert breaks.frame().equals(chain_breaks([frame.rechunk()]))
    assert breaks.frame().equals(chain_breaks([frame.slice(i, 1) for i in range(len(rows))]))

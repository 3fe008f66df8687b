"""`core.read_ahead`: items in order, the next one made while the caller holds this one, errors in place."""

from __future__ import annotations

import threading

import pytest

from market_pipeline.core.read_ahead import read_ahead


def test_items_come_in_order_and_the_next_is_made_while_the_caller_works():
    made: list[threading.Event] = [threading.Event() for _ in range(3)]

    def items():
        for k, event in enumerate(made):
            event.set()
            yield k

    seen = []
    for item in read_ahead(items(), "test-read-ahead"):
        if item + 1 < len(made):
            # Holding item k, item k + 1 is made on the helper thread (a sequential reader would
            # wait here forever; the timeout only bounds a broken run).
            assert made[item + 1].wait(timeout=30)
        seen.append(item)
    assert seen == [0, 1, 2]


def test_an_error_making_an_item_is_raised_in_its_place():
    def items():
        yield "first"
        raise ValueError("row group 2 is truncated")

    got = []
    with pytest.raises(ValueError, match="row group 2 is truncated"):
        for item in read_ahead(items(), "test-read-ahead"):
            got.append(item)
    assert got == ["first"]


def test_stopping_early_ends_the_helper_thread():
    def items():
        yield from range(100)

    reader = read_ahead(items(), "test-read-ahead-stop")
    assert next(reader) == 0
    reader.close()
    assert not [t for t in threading.enumerate() if t.name.startswith("test-read-ahead-stop")]

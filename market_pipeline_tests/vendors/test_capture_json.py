"""The values the one-pass capture readers take (`capture_json`), read as the line path reads them:
a decimal the double Python's `float` reads, anything else declined."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from market_pipeline.vendors.binance import capture_json


def _text(value: str) -> np.ndarray:
    return np.frombuffer(value.encode(), dtype=np.uint8)


def _read_decimal(text: str) -> float | None:
    quoted = _text(f'"{text}"')
    past, value = capture_json.decimal(quoted, 0, len(quoted), capture_json.POWERS)
    return None if past < 0 else value


@settings(max_examples=500, deadline=None)
@given(whole=st.integers(0, 10**16), fraction=st.text("0123456789", max_size=24), dot=st.booleans())
def test_a_decimal_read_is_the_double_float_reads(whole, fraction, dot):
    text = f"{whole}.{fraction}" if dot else str(whole)
    significant = len(f"{whole}{fraction if dot else ''}".lstrip("0"))
    readable = (not dot or 0 < len(fraction) <= 22) and significant <= 15
    value = _read_decimal(text)
    assert (value is not None) == readable, text
    if readable:
        assert value == float(text), text


SKIPPED = {'"trade",': 7, "12,": 2, "true,": 4, "false}": 5, '"MARKET"}': 8}
NOT_SKIPPED = ["null,", "-1,", "01,", '"a\\"b",', "[1],", '{"a":1},', "tru,", "True,"]


@pytest.mark.parametrize("value", SKIPPED, ids=SKIPPED)
def test_a_string_integer_or_boolean_is_skipped_whole(value):
    text = _text(value)
    assert capture_json.simple_value_end(text, 0, len(text)) == SKIPPED[value]


@pytest.mark.parametrize("value", NOT_SKIPPED)
def test_any_other_value_is_not_skipped(value):
    # A fraction or an exponent after an integer is found by the reader: not a comma or a brace.
    text = _text(value)
    assert capture_json.simple_value_end(text, 0, len(text)) < 0

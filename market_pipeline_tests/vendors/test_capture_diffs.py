"""The depth diffs read in one pass (`capture_diffs`) read as Arrow's reader and the line path read
them: the same tables from real captures and from diffs in every shape it takes, and every diff in
another shape left to the others (and then the same tables or the same error)."""

from __future__ import annotations

import json

import pytest

from market_pipeline_tests.support.binance_capture import (
    SPOT,
    USDM,
    assert_same_outcome,
    line_path_outcome,
    one_pass_reads,
    outcome_without,
    parse_outcome,
    real_paths,
    write_capture_lines,
)

DATA = {
    "e": "depthUpdate",
    "E": 1700000000001,
    "s": "BTCUSDT",
    "U": 5,
    "u": 6,
    "b": [["10.5", "3"], ["10.4", "0.000"]],
    "a": [["11", "1.25"]],
}
TRADE = {"e": "trade", "E": 2, "s": "BTCUSDT", "t": 7, "p": "10.5", "q": "0.25", "T": 1, "m": True}


def _line(data: dict | str, stream: str = "btcusdt@depth@0ms") -> str:
    body = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    return f'{{"stream":"{stream}","data":{body}}}'


DIFF = _line(DATA)
REGULAR = [DIFF, _line(TRADE, "btcusdt@trade"), DIFF.replace('"u":6', '"u":7')]


@pytest.fixture
def fast_reads(monkeypatch):
    """For every chunk decoded in bulk, whether `capture_diffs` read its diffs."""
    return one_pass_reads(monkeypatch, "decode_diffs")


def _read(reads) -> list[bool]:
    return [read for _, read in reads]


@pytest.mark.parametrize("names", [USDM, SPOT], ids=["usdm", "spot"])
def test_real_captures_read_in_one_pass_equal_arrows_reading(names, fast_reads, monkeypatch):
    paths = real_paths(names)
    expected = outcome_without(monkeypatch, "decode_diffs", paths, 20_000)
    fast_reads.clear()
    assert_same_outcome(expected, parse_outcome(paths, 20_000))
    assert fast_reads and all(_read(fast_reads)), "a chunk of Binance's own diffs was not read in one pass"


READ = {
    "spot": DIFF,
    "futures": _line({**DATA, "T": 1700000000000, "pu": 4}),
    "fields in another order": _line({"b": DATA["b"], **dict(reversed([(k, v) for k, v in DATA.items() if k != "b"]))}),
    "no event type": _line({k: v for k, v in DATA.items() if k != "e"}),
    "no levels": _line({**DATA, "b": [], "a": []}),
    "large numbers": _line({**DATA, "U": 2**63 - 2, "u": 2**63 - 1, "b": [["999999999999999", "0.00000000000001"]]}),
    "zero": _line({**DATA, "E": 0, "b": [["0", "0.0"]]}),
}


@pytest.mark.parametrize("diff", READ.values(), ids=READ.keys())
def test_diffs_in_binances_shapes_are_read_in_one_pass(diff, tmp_path, fast_reads, monkeypatch):
    market = "usdm" if '"pu"' in diff else "spot"
    path = write_capture_lines(tmp_path / f"binance_{market}_btcusdt_20231114.txt", [diff, REGULAR[1], diff])
    expected = line_path_outcome([path], 10**7, monkeypatch)
    assert not isinstance(expected, tuple), expected
    fast_reads.clear()
    assert_same_outcome(expected, parse_outcome([path], 10**7))
    assert _read(fast_reads) == [True]


LEFT = {
    "spaced": _line(json.dumps(DATA)),
    "asks before bids": _line(dict(reversed(DATA.items()))),
    "escaped symbol": DIFF.replace('"BTCUSDT"', '"BTC\\u0055SDT"'),
    "escaped field name": DIFF.replace('"U":', '"\\u0055":'),
    "exponent": DIFF.replace('"10.5"', '"1.05e1"'),
    "signed price": DIFF.replace('"10.5"', '"+10.5"'),
    "negative size": DIFF.replace('"1.25"', '"-1.25"'),
    "leading zero": DIFF.replace('"10.5"', '"010.5"'),
    "bare dot": DIFF.replace('"10.5"', '"10."'),
    "16 significant digits": DIFF.replace('"10.5"', '"1234567890.123456"'),
    "23 decimals": DIFF.replace('"1.25"', '"0.00000000000000000000001"'),
    "number as price": DIFF.replace('"10.5"', "10.5"),
    "string id": DIFF.replace('"U":5', '"U":"5"'),
    "negative id": DIFF.replace('"U":5', '"U":-5'),
    "id with leading zero": DIFF.replace('"U":5', '"U":05'),
    "id past int64": DIFF.replace('"u":6', f'"u":{2**63}'),
    "fractional time": DIFF.replace('"E":1700000000001', '"E":1700000000001.0'),
    "another field": DIFF.replace('"U":5', '"U":5,"x":1'),
    "duplicated field": DIFF.replace('"U":5', '"U":5,"U":5'),
    "missing symbol": DIFF.replace('"s":"BTCUSDT",', ""),
    "missing first id": DIFF.replace('"U":5,', ""),
    "level of three": DIFF.replace('["11","1.25"]', '["11","1.25","2"]'),
    "level of one": DIFF.replace('["11","1.25"]', '["11"]'),
    "another symbol": DIFF.replace("BTCUSDT", "ETHUSDT"),
    "trailing text": DIFF + " x",
    "two objects": DIFF + DIFF,
    "unclosed": DIFF[:-1],
    "null id": DIFF.replace('"U":5', '"U":null'),
    "null price": DIFF.replace('"10.5"', "null"),
}


@pytest.mark.parametrize("diff", LEFT.values(), ids=LEFT.keys())
def test_a_diff_in_another_shape_is_left_to_the_other_paths(diff, tmp_path, fast_reads, monkeypatch):
    path = write_capture_lines(tmp_path / "binance_spot_btcusdt_20231114.txt", [*REGULAR, diff, *REGULAR])
    expected = line_path_outcome([path], 10**7, monkeypatch)
    fast_reads.clear()
    assert_same_outcome(expected, parse_outcome([path], 10**7))
    assert _read(fast_reads) == [False]

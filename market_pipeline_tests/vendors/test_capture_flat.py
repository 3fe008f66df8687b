"""The bookTickers and trades read in one pass (`capture_flat`) read as Arrow's reader and the line
path read them: the same tables from real captures and from messages in every shape it takes, and
every message in another shape left to the others (and then the same tables or the same error)."""

from __future__ import annotations

import json

import pytest

from market_pipeline.vendors.binance import capture_flat
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

TICKER = {"u": 400900217, "s": "BNBUSDT", "b": "25.35190000", "B": "31.21000000", "a": "25.36520000", "A": "40.66"}
FUTURES_TICKER = {"e": "bookTicker", **TICKER, "T": 1700000000000, "E": 1700000000001}
TRADE = {"e": "trade", "E": 2, "s": "BNBUSDT", "t": 7, "p": "10.5", "q": "0.25", "T": 1, "m": True, "M": True}
FUTURES_TRADE = {"e": "trade", "E": 2, "T": 1, "s": "BNBUSDT", "t": 7, "p": "10.5", "q": "0.250", "X": "MARKET"}
FUTURES_TRADE["m"] = False
DIFF = {"e": "depthUpdate", "E": 1, "s": "BNBUSDT", "U": 5, "u": 6, "b": [["10.5", "3"]], "a": []}


def _line(data: dict | str, channel: str) -> str:
    body = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    return f'{{"stream":"bnbusdt@{channel}","data":{body}}}'


def ticker(data: dict | str = TICKER) -> str:
    return _line(data, "bookTicker")


def trade(data: dict | str = TRADE) -> str:
    return _line(data, "trade")


REGULAR = [ticker(), trade(), _line(DIFF, "depth@100ms"), ticker(), trade()]


@pytest.fixture
def flat_reads(monkeypatch):
    """For every kind of every chunk decoded in bulk, (kind, whether `capture_flat` read it)."""
    return one_pass_reads(monkeypatch, "decode_flat")


def _read(reads) -> list[tuple[str, bool]]:
    return [("ticker" if args[-1] is capture_flat.TICKER else "trade", read) for args, read in reads]


@pytest.mark.parametrize("names", [USDM, SPOT], ids=["usdm", "spot"])
def test_real_captures_read_in_one_pass_equal_arrows_reading(names, flat_reads, monkeypatch):
    paths = real_paths(names)
    expected = outcome_without(monkeypatch, "decode_flat", paths, 20_000)
    flat_reads.clear()
    assert_same_outcome(expected, parse_outcome(paths, 20_000))
    assert flat_reads and all(read for _, read in flat_reads), "Binance's own messages were not read in one pass"


READ = {
    "spot ticker": ticker(),
    "futures ticker": ticker(FUTURES_TICKER),
    "ticker without symbol": ticker({k: v for k, v in TICKER.items() if k != "s"}),
    "ticker fields in another order": ticker(dict(reversed(FUTURES_TICKER.items()))),
    "ticker of large numbers": ticker({**TICKER, "u": 2**63 - 1, "E": 0, "b": "999999999999999", "B": "0"}),
    "spot trade": trade(),
    "futures trade": trade(FUTURES_TRADE),
    "trade fields in another order": trade(dict(reversed(FUTURES_TRADE.items()))),
    "trade of another field": trade({**TRADE, "x": 12, "longer name": "text", "y": False}),
    "buyer the taker": trade({**TRADE, "m": False}),
}


@pytest.mark.parametrize("message", READ.values(), ids=READ.keys())
def test_messages_in_binances_shapes_are_read_in_one_pass(message, tmp_path, flat_reads, monkeypatch):
    path = write_capture_lines(tmp_path / "binance_spot_bnbusdt_20231114.txt", [*REGULAR, message, *REGULAR])
    expected = line_path_outcome([path], 10**7, monkeypatch)
    assert not isinstance(expected, tuple), expected
    flat_reads.clear()
    assert_same_outcome(expected, parse_outcome([path], 10**7))
    assert _read(flat_reads) == [("ticker", True), ("trade", True)]


_TICKER, _TRADE = ticker(), trade()
LEFT = {
    "spaced ticker": ticker(json.dumps(TICKER)),
    "escaped symbol": _TICKER.replace('"BNBUSDT"', '"BNB\\u0055SDT"'),
    "escaped field name": _TRADE.replace('"q":', '"\\u0071":'),
    "exponent": _TICKER.replace('"40.66"', '"4.066e1"'),
    "number as price": _TICKER.replace('"40.66"', "40.66"),
    "16 significant digits": _TRADE.replace('"10.5"', '"1234567890.123456"'),
    "not a number": _TRADE.replace('"10.5"', '"ten"'),
    "string trade id": _TRADE.replace('"t":7', '"t":"7"'),
    "fractional time": _TRADE.replace('"T":1', '"T":1.0'),
    "string event time": _TRADE.replace('"E":2', '"E":"2"'),
    "negative id": _TICKER.replace('"u":400900217', '"u":-1'),
    "id past int64": _TICKER.replace('"u":400900217', f'"u":{2**63}'),
    "boolean as string": _TRADE.replace('"m":true', '"m":"true"'),
    "levels in a ticker": _TICKER.replace('"b":"25.35190000"', '"b":[["25.3519","1"]]'),
    "a diff's field in a trade": _TRADE.replace('"t":7', '"t":7,"pu":3'),
    "null symbol": _TICKER.replace('"BNBUSDT"', "null"),
    "null in another field": _TRADE.replace('"M":true', '"M":null'),
    "fraction in another field": _TRADE.replace('"M":true', '"M":1.5'),
    "object in another field": _TRADE.replace('"M":true', '"M":{"x":1}'),
    "duplicated field": _TICKER.replace('"u":400900217', '"u":400900217,"u":400900218'),
    "duplicated symbol": _TICKER.replace('"s":"BNBUSDT"', '"s":"BNBUSDT","s":"BNBUSDT"'),
    "missing update id": _TICKER.replace('"u":400900217,', ""),
    "missing maker flag": _TRADE.replace(',"m":true', ""),
    "another symbol": _TRADE.replace("BNBUSDT", "ETHUSDT"),
    "trailing text": _TICKER + " x",
    "two objects": _TICKER + _TICKER,
    "unclosed": _TRADE[:-1],
}


@pytest.mark.parametrize("message", LEFT.values(), ids=LEFT.keys())
def test_a_message_in_another_shape_is_left_to_the_other_paths(message, tmp_path, flat_reads, monkeypatch):
    path = write_capture_lines(tmp_path / "binance_spot_bnbusdt_20231114.txt", [*REGULAR, message, *REGULAR])
    expected = line_path_outcome([path], 10**7, monkeypatch)
    flat_reads.clear()
    assert_same_outcome(expected, parse_outcome([path], 10**7))
    kind = "ticker" if "@bookTicker" in message else "trade"
    assert (kind, False) in _read(flat_reads)

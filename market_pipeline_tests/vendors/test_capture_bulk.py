"""The capture parser's bulk decoding (`capture_bulk`) reads every chunk as the line path reads it:
the same tables from real and synthetic captures, and for every line the bulk path does not read
(it hands the chunk to the line path) the same tables or the same error naming the same line."""

from __future__ import annotations

import json

import pytest

from market_pipeline.vendors.binance import capture_bulk, capture_stream
from market_pipeline_tests.support.binance_capture import (
    SPOT,
    USDM,
    assert_same_outcome,
    line_path_outcome,
    parse_outcome,
    real_paths,
    write_capture_lines,
)


def _compact(stream: str, data: dict) -> str:
    return json.dumps({"stream": stream, "data": data}, separators=(",", ":"))


DIFF = _compact(
    "btcusdt@depth@0ms",
    {
        "e": "depthUpdate",
        "E": 1,
        "s": "BTCUSDT",
        "U": 5,
        "u": 6,
        "b": [["10.5", "3"], ["10.4", "0"]],
        "a": [["11", "1"]],
    },
)
TICKER = _compact("btcusdt@bookTicker", {"u": 6, "s": "BTCUSDT", "b": "10.5", "B": "3", "a": "11", "A": "1"})
TRADE = _compact(
    "btcusdt@trade", {"e": "trade", "E": 2, "s": "BTCUSDT", "t": 7, "p": "10.5", "q": "0.25", "T": 1, "m": True}
)
SNAPSHOT = json.dumps({"lastUpdateId": 4, "bids": [["10.5", "2"]], "asks": [["11", "1"]]}, separators=(",", ":"))
REGULAR = [SNAPSHOT, DIFF, TICKER, TRADE, DIFF.replace('"b":[[', '"b":[],"x":[['), TICKER, TRADE, DIFF]


@pytest.fixture(autouse=True)
def bulk_calls(monkeypatch):
    """The first line_no of every chunk the bulk path decoded, whatever its length."""
    decoded: list[int] = []
    monkeypatch.setattr(capture_bulk, "BULK_MIN_LINES", 1)

    def counted(lines, first_line_no):
        result = capture_bulk.decode_lines(lines, first_line_no)
        if result is not None:
            decoded.append(first_line_no)
        return result

    monkeypatch.setattr(capture_stream, "decode_lines", counted)
    return decoded


@pytest.mark.parametrize("names", [USDM, SPOT], ids=["usdm", "spot"])
@pytest.mark.parametrize("chunk_lines", [4999, 10**7], ids=["small", "huge"])
def test_bulk_decoding_equals_the_line_path_on_real_captures(names, chunk_lines, bulk_calls, monkeypatch):
    paths = real_paths(names)
    assert_same_outcome(line_path_outcome(paths, chunk_lines, monkeypatch), parse_outcome(paths, chunk_lines))
    assert bulk_calls, "no chunk was decoded in bulk"


ODD_LINES = {
    "spaced JSON": json.dumps(json.loads(TRADE)),
    "data before stream": json.dumps({"data": json.loads(TRADE)["data"], "stream": "btcusdt@trade"}),
    "null symbol": TRADE.replace('"BTCUSDT"', "null"),
    "null in a ticker": TICKER.replace('"u":6', '"u":null'),
    "null in a REST snapshot": SNAPSHOT.replace('"lastUpdateId":4', '"lastUpdateId":4,"E":null'),
    "futures diff of spot": DIFF.replace('"u":6', '"u":6,"pu":5'),
    "level of three": DIFF.replace('["11","1"]', '["11","1","2"]'),
    "number as price": TRADE.replace('"10.5"', "10.5"),
    "string trade id": TRADE.replace('"t":7', '"t":"7"'),
    "fractional event time": DIFF.replace('"E":1,', '"E":1.0,'),
    "missing field": TICKER.replace('"A":"1"', '"Z":"1"'),
    "bad number": TRADE.replace('"10.5"', '"ten"'),
    "other symbol": TRADE.replace("BTCUSDT", "ETHUSDT"),
    "non-ASCII symbol": TRADE.replace("BTCUSDT", "BTCÜSDT"),
    "two objects": TRADE + TRADE,
    "trailing text": TRADE + " x",
    "unsupported stream": TRADE.replace("@trade", "@depth5"),
    "duplicated key": TRADE.replace('"t":7', '"t":7,"t":8'),
    "not an object": "[1, 2]",
}


@pytest.mark.parametrize("odd", ODD_LINES.values(), ids=ODD_LINES.keys())
def test_an_odd_line_reads_as_the_line_path_reads_it(odd, tmp_path, monkeypatch):
    path = write_capture_lines(tmp_path / "binance_spot_btcusdt_20231114.txt", [*REGULAR, odd, *REGULAR])
    assert_same_outcome(line_path_outcome([path], 10**7, monkeypatch), parse_outcome([path], 10**7))


@pytest.mark.parametrize("stamp", ["+1700000000000000000", "", "17000000000000000000", "1700000000000000000x"])
def test_an_odd_receive_time_reads_as_the_line_path_reads_it(stamp, tmp_path, monkeypatch):
    path = write_capture_lines(tmp_path / "binance_spot_btcusdt_20231114.txt", REGULAR)
    lines = path.read_text().splitlines(keepends=True)
    lines[3] = stamp + lines[3][lines[3].index(" ") :]
    path.write_text("".join(lines))
    assert_same_outcome(line_path_outcome([path], 10**7, monkeypatch), parse_outcome([path], 10**7))


def test_regular_lines_are_decoded_in_bulk(tmp_path, bulk_calls, monkeypatch):
    path = write_capture_lines(tmp_path / "binance_spot_btcusdt_20231114.txt", REGULAR * 3 + [""])
    assert_same_outcome(line_path_outcome([path], 5, monkeypatch), parse_outcome([path], 5))
    assert len(bulk_calls) >= 4


FUTURES_DIFF = DIFF.replace('"u":6', '"u":6,"pu":5')
LATER_CHUNKS = {
    "another symbol": [TRADE.replace("BTCUSDT", "ETHUSDT")] * len(REGULAR),
    "another market": [FUTURES_DIFF] * len(REGULAR),
    "the symbol named first": [SNAPSHOT] * len(REGULAR),
}


@pytest.mark.parametrize("name", LATER_CHUNKS)
def test_chunks_decoded_side_by_side_follow_the_lines_before_them(name, tmp_path, bulk_calls, monkeypatch):
    """Chunks are decoded ahead, on threads, without the parser's state: a chunk naming another
    symbol or market than the lines before it reads as the line path reads it (its error, naming
    its line), and one naming none takes theirs."""
    later = LATER_CHUNKS[name]
    lines = [*later, *REGULAR] if name == "the symbol named first" else [*REGULAR, *later, *REGULAR]
    path = write_capture_lines(tmp_path / "binance_spot_btcusdt_20231114.txt", lines)
    expected = line_path_outcome([path], len(REGULAR), monkeypatch)
    assert_same_outcome(expected, parse_outcome([path], len(REGULAR)))
    assert isinstance(expected, tuple) == (name != "the symbol named first")
    assert len(bulk_calls) >= 2

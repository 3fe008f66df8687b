"""Binance capture parsing, checked against an independent exact Decimal replay of real captures."""

from __future__ import annotations

import datetime as dt
import gzip
from pathlib import Path

import polars as pl
import pytest

from market_pipeline.core.lake.schemas import (
    BOOK_DELTA_SCHEMA,
    BOOK_LEVELS,
    BOOK_SCHEMA,
    BOOK_TICKER_SCHEMA,
    CAPTURE_DELTA_EXTRA_SCHEMA,
    DEPTH_SNAPSHOT_SCHEMA,
    TRADES_SCHEMA,
)
from market_pipeline.vendors.binance.capture_format import (
    binance_market_of,
    iter_messages,
    lake_instrument,
)
from market_pipeline.vendors.capture_files import CaptureFormatError, open_capture
from market_pipeline_tests.support.binance_capture import (
    DOCUMENTED,
    SPOT,
    SYNTHETIC_SPOT,
    TRADE,
    USDM,
    parse_capture,
    real_paths,
    split_by_day,
)
from market_pipeline_tests.support.binance_capture import diff as _diff
from market_pipeline_tests.support.binance_capture import write_capture_lines as _write
from market_pipeline_tests.support.reference_book import replay

# bookTicker lines: the README's line counts minus diffs, trades and the one REST snapshot.
BOOK_TICKER_ROWS = {USDM: 93_954 - 6551 - 21313 - 1, SPOT: 41_249 + 58_325 - 6495 - 19904 - 1}


@pytest.fixture(scope="module", params=[USDM, SPOT], ids=["usdm", "spot"])
def capture(request):
    """(file names, parsed tables, reference replay) of one real capture."""
    paths = real_paths(request.param)
    return request.param, parse_capture(paths), replay(paths)


# --- (a) the reference replay reproduces the documented figures -------------------------------


def test_reference_replay_reproduces_documented_figures(capture):
    names, _, result = capture
    assert {key: result[key] for key in DOCUMENTED[names]} == DOCUMENTED[names]
    assert result["resyncs"] == 0
    assert result["skipped_before_sync"] + result["applied"] == result["diffs"]
    assert float(result["final_best_bid"]) < float(result["final_best_ask"])


# --- (b) a removed diff is exactly one gap ----------------------------------------------------


def _copy_without_middle_diff(source: Path, target: Path) -> tuple[int, int]:
    """Copy a capture without its middle diff line; (diffs in the copy, diffs before the cut)."""
    lines = gzip.open(source, "rt", encoding="utf-8").read().splitlines(keepends=True)
    snapshot_line = next(i for i, line in enumerate(lines) if '"lastUpdateId"' in line)
    diff_lines = [i for i, line in enumerate(lines) if "@depth" in line]
    diffs_before = len(diff_lines) // 2
    removed = diff_lines[diffs_before]
    assert removed > snapshot_line + 100  # well after the sync
    with gzip.open(target, "wt", encoding="utf-8", compresslevel=1) as out:
        out.writelines(line for i, line in enumerate(lines) if i != removed)
    return len(diff_lines) - 1, diffs_before


@pytest.mark.parametrize(("name", "skipped_before_sync"), [(USDM[0], 4), (SPOT[0], 2)], ids=["usdm", "spot"])
def test_removed_diff_is_exactly_one_gap(name, skipped_before_sync, tmp_path):
    (source,) = real_paths((name,))
    target = tmp_path / name
    diffs, diffs_before = _copy_without_middle_diff(source, target)
    result = replay([target])
    assert result["gaps"] == 1
    assert result["resyncs"] == 0  # the capture has a single REST snapshot
    assert result["diffs"] == diffs
    assert result["skipped_before_sync"] == skipped_before_sync
    # The diffs before the removed one are applied; from the gap on none is.
    assert result["applied"] == diffs_before - skipped_before_sync
    assert result["ticker_mismatches"] == 0


# --- (c) parse_capture ------------------------------------------------------------------------


def test_tables_have_lake_schemas(capture):
    _, tables, _ = capture
    assert tables.trades.schema == pl.Schema(TRADES_SCHEMA)
    assert tables.book_delta_v2.schema == pl.Schema(
        {**BOOK_DELTA_SCHEMA, **CAPTURE_DELTA_EXTRA_SCHEMA, "line_no": pl.Int64()}
    )
    assert tables.depth_snapshot.schema == pl.Schema({**DEPTH_SNAPSHOT_SCHEMA, "line_no": pl.Int64()})
    assert tables.book.schema == pl.Schema(BOOK_SCHEMA)
    assert tables.book_ticker.schema == pl.Schema({**BOOK_TICKER_SCHEMA, "line_no": pl.Int64()})


def test_instrument_names(capture):
    names, tables, _ = capture
    expected = {
        USDM: ("usdm", "BINANCE_FUTURES", "BTC-USDT-PERP"),
        SPOT: ("spot", "BINANCE", "BTC-USDT"),
    }[names]
    assert (tables.market, tables.exchange, tables.symbol) == expected


def test_row_counts_match_the_replay(capture):
    names, tables, result = capture
    deltas = tables.book_delta_v2
    assert deltas.get_column("line_no").n_unique() == result["diffs"]
    assert tables.trades.height == result["trades"]
    assert tables.book_ticker.height == BOOK_TICKER_ROWS[names]
    assert tables.book.height == 1  # one REST snapshot in each capture
    assert tables.depth_snapshot.height == 2000  # 1000 levels a side


def test_diff_rows_keep_message_structure(capture):
    names, tables, _ = capture
    deltas = tables.book_delta_v2
    per_message = deltas.group_by("line_no", maintain_order=True).agg(
        pl.max_horizontal(
            pl.col("received_time", "origin_time", "sequence_number", "first_update_id").n_unique()
        ).alias("distinct"),
        # bids rows first, then asks: side_is_bid never goes from False back to True
        (pl.col("side_is_bid").cast(pl.Int8).diff() > 0).any().alias("bid_after_ask"),
    )
    assert (per_message["distinct"] == 1).all()
    assert not per_message["bid_after_ask"].any()
    # Every table keeps the capture's line order.
    for frame in (deltas, tables.depth_snapshot, tables.book_ticker):
        assert frame.get_column("line_no").is_sorted()
    messages = deltas.unique("line_no", keep="first", maintain_order=True)
    u = messages.get_column("sequence_number")
    if names == USDM:
        # No gap: the pu chain links every message to the previous one.
        assert (messages.get_column("prev_update_id").slice(1) == u.slice(0, len(u) - 1)).all()
        # The capture host's clock runs about 1.27 s behind the exchange's event time.
        skew = (deltas["received_time"] - deltas["origin_time"]).median() / 1e9
        assert -1.4 < skew < -1.1
    else:
        assert deltas.get_column("prev_update_id").null_count() == deltas.height
        first_ids = messages.get_column("first_update_id").slice(1)
        assert (first_ids == u.slice(0, len(u) - 1) + 1).all()


def test_book_is_top_of_the_rest_snapshot(capture):
    names, tables, _ = capture
    paths = real_paths(names)
    line_no, recv_ns, snapshot = next(
        (line_no, recv_ns, payload) for line_no, recv_ns, kind, payload in iter_messages(paths) if kind == "snapshot"
    )
    book = tables.book.row(0, named=True)
    assert book["sequence_number"] == snapshot["lastUpdateId"]
    assert book["received_time"] == recv_ns
    # Futures REST snapshots carry the exchange time E; spot ones carry none.
    expected_origin = snapshot["E"] * 1_000_000 if "E" in snapshot else recv_ns
    assert book["origin_time"] == expected_origin
    for i in range(BOOK_LEVELS):
        assert book[f"bid_{i}_price"] == float(snapshot["bids"][i][0])
        assert book[f"bid_{i}_size"] == float(snapshot["bids"][i][1])
        assert book[f"ask_{i}_price"] == float(snapshot["asks"][i][0])
        assert book[f"ask_{i}_size"] == float(snapshot["asks"][i][1])
    assert book["bid_0_price"] < book["ask_0_price"]
    assert tables.depth_snapshot.get_column("line_no").unique().to_list() == [line_no]


def test_split_by_day_on_the_spot_pair():
    tables = parse_capture(real_paths(SPOT))
    days = split_by_day(tables)
    assert list(days) == [dt.date(2024, 8, 8), dt.date(2024, 8, 9)]
    for name in ("trades", "book_delta_v2", "depth_snapshot", "book", "book_ticker"):
        whole = getattr(tables, name)
        parts = [getattr(day_tables, name) for day_tables in days.values()]
        assert pl.concat(parts).equals(whole)  # nothing lost, order kept
    for day, day_tables in days.items():
        start = int(dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC).timestamp()) * 10**9
        received = day_tables.book_delta_v2.get_column("received_time")
        assert start <= received.min() and received.max() < start + 86_400 * 10**9
        assert day_tables.symbol == "BTC-USDT"


# --- synthetic captures: exact rules and malformed lines --------------------------------------


def test_reference_replay_rules_on_a_synthetic_capture(tmp_path):
    path = _write(tmp_path / "binance_spot_btcusdt_20231114.txt", SYNTHETIC_SPOT)
    assert replay([path]) == {
        "market": "spot",
        "diffs": 5,
        "skipped_before_sync": 1,
        "applied": 3,
        "gaps": 1,
        "resyncs": 1,
        "ticker_checks": 2,
        "ticker_mismatches": 1,
        "trades": 1,
        "final_best_bid": "9.5",
        "final_best_ask": "12",
    }


def test_verify_names_the_first_mismatching_ticker_by_its_line(tmp_path):
    """The mismatching bookTicker is the second in line order, the third by u (the one of u 103
    sorts first): the replay, which reads them sorted by u, names its line order's index."""
    from market_pipeline.vendors.binance.verify import verify_capture

    result = verify_capture([_write(tmp_path / "binance_spot_btcusdt_20231114.txt", SYNTHETIC_SPOT)])
    assert (result["ticker_checks"], result["ticker_mismatches"], result["first_mismatch_ticker"]) == (2, 1, 1)


def test_verify_a_capture_without_book_tickers(tmp_path):
    """A capture recorded without the bookTicker stream verifies with nothing to check (its scratch
    of tickers holds only empty row groups)."""
    from market_pipeline.vendors.binance.verify import verify_capture

    lines = [line for line in SYNTHETIC_SPOT if "bookTicker" not in line]
    result = verify_capture([_write(tmp_path / "binance_spot_btcusdt_20231114.txt", lines)])
    expected = {"diffs": 5, "applied": 3, "gaps": 1, "ticker_checks": 0, "ticker_mismatches": 0}
    assert {key: result[key] for key in expected} == expected


def test_parse_synthetic_capture(tmp_path):
    start = 1_700_000_000_000_000_000
    tables = parse_capture([_write(tmp_path / "capture.txt", SYNTHETIC_SPOT, start)])
    assert (tables.market, tables.exchange, tables.symbol) == ("spot", "BINANCE", "BTC-USDT")
    assert tables.trades.row(0) == (1_700_000_000_000 * 10**6, start + 7, "sell", 10.5, 0.25, "7")
    # Spot tickers and snapshots carry no exchange time: the receive time stands in.
    assert tables.book_ticker.row(0) == (start + 3, start + 3, 104, 10.5, 3.0, 11.5, 1.0, 3)
    assert tables.book.select("origin_time", "received_time", "sequence_number").rows() == [
        (start + 2, start + 2, 100),
        (start + 9, start + 9, 108),
    ]
    assert tables.book.row(0, named=True)["bid_1_price"] is None  # fewer than 20 levels
    assert tables.book_delta_v2.filter(pl.col("line_no") == 4).select(
        "sequence_number", "first_update_id", "side_is_bid", "price", "size"
    ).rows() == [(104, 103, False, 11.0, 0.0), (104, 103, False, 11.5, 1.0)]
    assert tables.depth_snapshot.height == 4


def test_open_capture_detects_gzip_by_magic_bytes(tmp_path):
    text = "1 {}\n"
    gz_named_plain = tmp_path / "plain.gz"
    gz_named_plain.write_text(text)
    txt_named_gzip = tmp_path / "compressed.txt"
    txt_named_gzip.write_bytes(gzip.compress(text.encode()))
    for path in (gz_named_plain, txt_named_gzip):
        with open_capture(path) as stream:
            assert stream.read() == text.encode()


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("not-a-time " + _diff(1, 2), "receive time"),
        ('1 {"stream": "btcusdt@depth@100ms", ', "Expecting"),  # bad JSON
        ("1 " + _diff(1, 2).replace('"U"', '"X"'), "lacks field(s) U"),
        ("1 " + TRADE.replace('"10.50"', '"ten"'), "bad trade message"),
        ("1 " + _diff(1, 2, bids=[("10", "1", "extra")]), "bad diff message"),
        ("1 " + _diff(1, 2).replace("@depth@100ms", "@depth20@100ms"), "unsupported stream"),
        ("1 [1, 2]", "not an object"),
        ('1 {"id": 1, "result": null}', "neither"),
    ],
)
def test_malformed_line_names_file_and_line(tmp_path, line, reason):
    good = _write(tmp_path / "a.txt", SYNTHETIC_SPOT[:2])
    bad = tmp_path / "b.txt"
    bad.write_text(f"5 {SYNTHETIC_SPOT[2]}\n{line}\n6 {TRADE}\n")
    with pytest.raises(CaptureFormatError) as caught:
        parse_capture([good, bad])
    error = caught.value
    assert (error.path, error.line_number) == (bad, 2)
    assert str(error).startswith(f"{bad}:2: ")
    assert reason in error.reason


def test_truncated_gzip_is_a_capture_format_error(tmp_path):
    body = "".join(f"{i} {TRADE}\n" for i in range(2000)).encode()
    path = tmp_path / "cut.gz"
    path.write_bytes(gzip.compress(body)[:-200])
    with pytest.raises(CaptureFormatError, match="unreadable"):
        parse_capture([path])


def test_mixed_instruments_are_rejected(tmp_path):
    eth = _write(tmp_path / "eth.txt", [TRADE.replace("BTCUSDT", "ETHUSDT")])
    btc = _write(tmp_path / "btc.txt", [TRADE])
    with pytest.raises(CaptureFormatError, match="differs"):
        parse_capture([btc, eth])


def test_instrument_naming():
    assert binance_market_of("binance_usdm_btcusdt_20240808.gz") == "usdm"
    assert binance_market_of(Path("/x/binance_coinm_btcusd_perp_20240808.gz")) == "coinm"
    assert binance_market_of("capture.gz") is None
    assert lake_instrument("spot", "BTCUSDT") == ("BINANCE", "BTC-USDT")
    assert lake_instrument("spot", "ETHBTC") == ("BINANCE", "ETH-BTC")
    assert lake_instrument("spot", "BTCFDUSD") == ("BINANCE", "BTC-FDUSD")
    assert lake_instrument("usdm", "BTCUSDT") == ("BINANCE_FUTURES", "BTC-USDT-PERP")
    assert lake_instrument("usdm", "BTCUSDT_240927") == ("BINANCE_FUTURES", "BTC-USDT-240927")
    assert lake_instrument("coinm", "BTCUSD_PERP") == ("BINANCE_DELIVERY", "BTC-USD-PERP")
    with pytest.raises(ValueError):
        lake_instrument("spot", "XYZ")

"""Binance captures for tests: the real third-party captures beside the repository (and the
figures an exact replay of them reproduces), and synthetic capture lines written as a capture file."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from market_pipeline.core.day_clock import NS_PER_DAY
from market_pipeline.vendors.binance import capture_bulk, capture_stream
from market_pipeline.vendors.binance.capture_stream import TABLE_SCHEMAS, CaptureParser
from market_pipeline.vendors.capture_files import CaptureFormatError
from market_pipeline_tests.support.project import REAL_DATA_DIR

# Third-party captures: read in place, never copied into the repository.
REAL_DIR = REAL_DATA_DIR
USDM = ("binance_usdm_btcusdt_20240808.gz",)
SPOT = ("binance_spot_btcusdt_20240808.gz", "binance_spot_btcusdt_20240809.gz")


# ../shared/reference/data-sources.md, "Figures an exact replay reproduces".
DOCUMENTED = {
    USDM: {
        "market": "usdm",
        "diffs": 6551,
        "skipped_before_sync": 4,
        "applied": 6547,
        "gaps": 0,
        "ticker_checks": 629,
        "ticker_mismatches": 0,
        "trades": 21313,
    },
    SPOT: {
        "market": "spot",
        "diffs": 6495,
        "skipped_before_sync": 2,
        "applied": 6493,
        "gaps": 0,
        "ticker_checks": 1072,
        "ticker_mismatches": 0,
        "trades": 19904,
    },
}


def real_paths(names: tuple[str, ...]) -> list[Path]:
    paths = [REAL_DIR / name for name in names]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        pytest.skip(f"third-party Binance captures not available in {REAL_DIR}: {missing}")
    return paths


def diff(first: int, last: int, bids=(), asks=(), event_ms: int = 1_700_000_000_000) -> str:
    data = {
        "e": "depthUpdate",
        "E": event_ms,
        "s": "BTCUSDT",
        "U": first,
        "u": last,
        "b": [list(level) for level in bids],
        "a": [list(level) for level in asks],
    }
    return json.dumps({"stream": "btcusdt@depth@100ms", "data": data})


def ticker(u: int, bid: str, bid_qty: str, ask: str, ask_qty: str) -> str:
    data = {"u": u, "s": "BTCUSDT", "b": bid, "B": bid_qty, "a": ask, "A": ask_qty}
    return json.dumps({"stream": "btcusdt@bookTicker", "data": data})


def snapshot(last_update_id: int, bids, asks) -> str:
    return json.dumps({"lastUpdateId": last_update_id, "bids": bids, "asks": asks})


TRADE = json.dumps(
    {
        "stream": "btcusdt@trade",
        "data": {
            "e": "trade",
            "E": 1_700_000_000_001,
            "s": "BTCUSDT",
            "t": 7,
            "p": "10.50",
            "q": "0.25",
            "T": 1_700_000_000_000,
            "m": True,
            "M": True,
        },
    }
)


# A spot capture exercising every rule; the comments give the replay's verdict.
SYNTHETIC_SPOT = [
    diff(99, 100, bids=[("10.0", "5")]),  # u <= lastUpdateId: dropped before the first sync
    diff(101, 102, bids=[("10.5", "3")]),  # U <= lastUpdateId + 1 <= u: first applied diff
    snapshot(100, bids=[["10.0", "1"]], asks=[["11.0", "2"]]),  # written after its diffs
    ticker(104, "10.5", "3", "11.5", "1"),  # before its diff: checked when it applies, matches
    diff(103, 104, asks=[("11.0", "0"), ("11.5", "1.0")]),
    ticker(104, "10.5", "3", "11.50", "9"),  # after its diff: checked, quantity mismatch
    ticker(103, "10.5", "3", "11.0", "2"),  # inside a diff's [U, u]: not checkable
    TRADE,
    diff(106, 107, bids=[("10.6", "1")]),  # U != previous u + 1: gap
    snapshot(108, bids=[["9", "1"]], asks=[["12", "1"]]),  # buffered diff 107 is stale
    diff(108, 110, bids=[("9.5", "1")]),  # U <= 109 <= u: resync
]


def write_capture_lines(path: Path, lines: list[str], start_ns: int = 1_700_000_000_000_000_000) -> Path:
    path.write_text("".join(f"{start_ns + i} {line}\n" for i, line in enumerate(lines)))
    return path


@dataclass
class CaptureTables:
    """One instrument's capture as lake tables, each in capture line order."""

    market: str  # spot | usdm | coinm
    exchange: str  # Crypto Lake exchange, e.g. BINANCE_FUTURES
    symbol: str  # Crypto Lake symbol, e.g. BTC-USDT-PERP
    trades: pl.DataFrame  # TRADES_SCHEMA
    book_delta_v2: pl.DataFrame  # BOOK_DELTA_SCHEMA + CAPTURE_DELTA_EXTRA_SCHEMA + line_no
    depth_snapshot: pl.DataFrame  # DEPTH_SNAPSHOT_SCHEMA + line_no
    book: pl.DataFrame  # BOOK_SCHEMA: top 20 levels of each REST snapshot
    book_ticker: pl.DataFrame  # BOOK_TICKER_SCHEMA + line_no


def parse_capture(paths: Sequence[Path], chunk_lines: int | None = None) -> CaptureTables:
    """Parse the capture files of ONE instrument, given in time order, into whole lake tables.

    Whole tables, for the tests' small inputs, from the streaming parser (`capture_stream`) that
    production reads large captures with, chunk by chunk. Raises CaptureFormatError naming the file and
    line of the first malformed line, or the file when the files mix instruments or markets.
    """
    parser = CaptureParser(paths, chunk_lines)
    parts: dict[str, list[pl.DataFrame]] = {name: [pl.DataFrame(schema=s)] for name, s in TABLE_SCHEMAS.items()}
    for chunk in parser.chunks():
        for name, frame in chunk.items():
            parts[name].append(frame)
    market, exchange, symbol = parser.instrument()
    return CaptureTables(market, exchange, symbol, **{name: pl.concat(frames) for name, frames in parts.items()})


_TABLES = ("trades", "book_delta_v2", "depth_snapshot", "book", "book_ticker")


def parse_outcome(paths: Sequence[Path], chunk_lines: int | None = None) -> CaptureTables | tuple[int | None, str]:
    """`parse_capture`'s tables, or its error's (line, reason): what two ways of parsing must share."""
    try:
        return parse_capture(paths, chunk_lines)
    except CaptureFormatError as exc:
        return (exc.line_number, exc.reason)


def line_path_outcome(
    paths: Sequence[Path], chunk_lines: int | None, monkeypatch: pytest.MonkeyPatch
) -> CaptureTables | tuple[int | None, str]:
    """`parse_outcome` with every chunk read line by line (none decoded in bulk)."""
    with monkeypatch.context() as patched:
        patched.setattr(capture_stream, "decode_lines", lambda lines, first_line_no: None)
        return parse_outcome(paths, chunk_lines)


def one_pass_reads(monkeypatch: pytest.MonkeyPatch, reader: str) -> list[tuple[tuple, bool]]:
    """For every call of the one-pass reader `capture_bulk.<reader>` from now on, (its arguments,
    whether it read them); chunks of any length are decoded in bulk."""
    reads: list[tuple[tuple, bool]] = []
    monkeypatch.setattr(capture_bulk, "BULK_MIN_LINES", 1)
    read = getattr(capture_bulk, reader)

    def recorded(*args):
        result = read(*args)
        reads.append((args, result is not None))
        return result

    monkeypatch.setattr(capture_bulk, reader, recorded)
    return reads


def outcome_without(
    monkeypatch: pytest.MonkeyPatch, reader: str, paths: Sequence[Path], chunk_lines: int | None
) -> CaptureTables | tuple[int | None, str]:
    """`parse_outcome` with the one-pass reader `capture_bulk.<reader>` reading nothing (Arrow's
    reader then reads what it would have)."""
    with monkeypatch.context() as patched:
        patched.setattr(capture_bulk, reader, lambda *args: None)
        return parse_outcome(paths, chunk_lines)


def assert_same_outcome(expected: CaptureTables | tuple, actual: CaptureTables | tuple) -> None:
    """The same error, or the same instrument and exactly the same tables."""
    if isinstance(expected, tuple):
        assert actual == expected
        return
    assert isinstance(actual, CaptureTables), actual
    assert (actual.market, actual.exchange, actual.symbol) == (expected.market, expected.exchange, expected.symbol)
    for name in _TABLES:
        assert_frame_equal(getattr(actual, name), getattr(expected, name), check_exact=True)


def split_by_day(tables: CaptureTables) -> dict[dt.date, CaptureTables]:
    """Split every table by the UTC day of its received_time (line order and line_no kept)."""
    epoch = dt.date(1970, 1, 1)
    day = pl.col("received_time") // NS_PER_DAY
    days: set[int] = set()
    for name in _TABLES:
        days.update(getattr(tables, name).select(day.unique()).to_series())
    return {
        epoch + dt.timedelta(days=d): CaptureTables(
            market=tables.market,
            exchange=tables.exchange,
            symbol=tables.symbol,
            **{name: getattr(tables, name).filter(day == d) for name in _TABLES},
        )
        for d in sorted(days)
    }

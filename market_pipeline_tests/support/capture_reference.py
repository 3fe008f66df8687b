"""The whole-file capture parser the pipeline used before it streamed: a small reference for tests.

Each line through `json.loads` and Python `float`, every level appended to Python lists, frames
built once at the end. The streaming parser (`capture_stream`) must produce exactly these tables.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import polars as pl

from market_pipeline.core.lake.schemas import BOOK_LEVELS, BOOK_SCHEMA, TRADES_SCHEMA
from market_pipeline.vendors.binance.capture_format import (
    DELTA_SCHEMA,
    NS_PER_MS,
    SNAPSHOT_LEVELS_SCHEMA,
    TICKER_SCHEMA,
    _iter_located,
    binance_market_of,
    lake_instrument,
    market_of_diff,
)
from market_pipeline.vendors.capture_files import CaptureFormatError
from market_pipeline_tests.support.binance_capture import CaptureTables


class _Columns:
    """Column lists filled message by message; polars frames are built once at the end."""

    def __init__(self) -> None:
        # Tickers and trades are one row per message: tuples, transposed by polars at the end.
        self.trades: list[tuple[Any, ...]] = []
        self.delta: dict[str, list[Any]] = {name: [] for name in DELTA_SCHEMA}
        self.levels: dict[str, list[Any]] = {name: [] for name in SNAPSHOT_LEVELS_SCHEMA}
        self.book: dict[str, list[Any]] = {name: [] for name in BOOK_SCHEMA}
        self.ticker: list[tuple[Any, ...]] = []

    def add_diff(self, line_no: int, recv_ns: int, d: dict[str, Any]) -> None:
        bids, asks = d["b"], d["a"]
        prices = [float(p) for p, _ in bids] + [float(p) for p, _ in asks]
        sizes = [float(q) for _, q in bids] + [float(q) for _, q in asks]
        n = len(prices)
        pu = d.get("pu")
        cols = self.delta
        cols["origin_time"].extend([int(d["E"]) * NS_PER_MS] * n)
        cols["received_time"].extend([recv_ns] * n)
        cols["sequence_number"].extend([int(d["u"])] * n)
        cols["side_is_bid"].extend([True] * len(bids) + [False] * len(asks))
        cols["price"].extend(prices)
        cols["size"].extend(sizes)
        cols["first_update_id"].extend([int(d["U"])] * n)
        cols["prev_update_id"].extend([None if pu is None else int(pu)] * n)
        cols["line_no"].extend([line_no] * n)

    def add_snapshot(self, line_no: int, recv_ns: int, s: dict[str, Any]) -> None:
        bids = [(float(p), float(q)) for p, q in s["bids"]]
        asks = [(float(p), float(q)) for p, q in s["asks"]]
        last_update_id = int(s["lastUpdateId"])
        levels = self.levels
        n = len(bids) + len(asks)
        levels["received_time"].extend([recv_ns] * n)
        levels["last_update_id"].extend([last_update_id] * n)
        levels["side_is_bid"].extend([True] * len(bids) + [False] * len(asks))
        levels["price"].extend([p for p, _ in bids] + [p for p, _ in asks])
        levels["size"].extend([q for _, q in bids] + [q for _, q in asks])
        levels["line_no"].extend([line_no] * n)
        # Futures REST snapshots carry the exchange's E (message time) / T (transaction time);
        # spot ones carry neither, so the receive time stands in.
        origin = s.get("E", s.get("T"))
        book = self.book
        book["origin_time"].append(recv_ns if origin is None else int(origin) * NS_PER_MS)
        book["received_time"].append(recv_ns)
        book["sequence_number"].append(last_update_id)
        # The REST API lists each side best first.
        for side, side_levels in (("bid", bids), ("ask", asks)):
            for i in range(BOOK_LEVELS):
                price, size = side_levels[i] if i < len(side_levels) else (None, None)
                book[f"{side}_{i}_price"].append(price)
                book[f"{side}_{i}_size"].append(size)

    def add_ticker(self, line_no: int, recv_ns: int, t: dict[str, Any]) -> None:
        origin = t.get("E", t.get("T"))
        self.ticker.append(
            (
                recv_ns if origin is None else int(origin) * NS_PER_MS,
                recv_ns,
                int(t["u"]),
                float(t["b"]),
                float(t["B"]),
                float(t["a"]),
                float(t["A"]),
                line_no,
            )
        )

    def add_trade(self, recv_ns: int, t: dict[str, Any]) -> None:
        if not isinstance(t["m"], bool):
            raise ValueError(f"trade field m is {t['m']!r}, not a boolean")
        self.trades.append(
            (
                int(t["T"]) * NS_PER_MS,
                recv_ns,
                "sell" if t["m"] else "buy",  # m: the buyer is the maker, so the taker sold
                float(t["p"]),
                float(t["q"]),
                str(t["t"]),
            )
        )


def reference_parse(paths: Sequence[Path]) -> CaptureTables:
    """Parse the capture files of ONE instrument, given in time order, into lake tables.

    Raises CaptureFormatError naming the file and line of the first malformed line, or the
    file when the files mix instruments or markets.
    """
    paths = [Path(p) for p in paths]
    if not paths:
        raise ValueError("parse_capture needs at least one capture file")
    named = {binance_market_of(p) for p in paths} - {None}
    if len(named) > 1:
        raise CaptureFormatError(paths[0], None, f"files name different markets {sorted(named)}")
    market = named.pop() if named else None
    binance_symbol: str | None = None
    cols = _Columns()
    for path, line_number, line_no, recv_ns, kind, payload in _iter_located(paths):
        try:
            symbol = payload.get("s")
            if symbol is not None:
                if binance_symbol is None:
                    binance_symbol = symbol
                elif symbol != binance_symbol:
                    raise ValueError(f"symbol {symbol!r} differs from {binance_symbol!r} before it")
            if kind == "ticker":
                cols.add_ticker(line_no, recv_ns, payload)
            elif kind == "trade":
                cols.add_trade(recv_ns, payload)
            elif kind == "diff":
                shape = market_of_diff(payload)
                if market is None:
                    market = shape
                elif shape != market:
                    raise ValueError(f"a {shape} depth diff in a {market} capture")
                cols.add_diff(line_no, recv_ns, payload)
            else:
                cols.add_snapshot(line_no, recv_ns, payload)
        except (ValueError, TypeError) as exc:  # non-numeric strings, levels not [price, qty]
            raise CaptureFormatError(path, line_number, f"bad {kind} message: {exc}") from None
    if binance_symbol is None:
        raise CaptureFormatError(paths[0], None, "no message names the symbol (field 's')")
    if market is None:
        raise CaptureFormatError(paths[0], None, "market unknown: no binance_{spot,usdm,coinm}_ file name and no diffs")
    try:
        exchange, symbol = lake_instrument(market, binance_symbol)
    except ValueError as exc:
        raise CaptureFormatError(paths[0], None, str(exc)) from None
    return CaptureTables(
        market=market,
        exchange=exchange,
        symbol=symbol,
        trades=pl.DataFrame(cols.trades, schema=TRADES_SCHEMA, orient="row"),
        book_delta_v2=pl.DataFrame(cols.delta, schema=DELTA_SCHEMA),
        depth_snapshot=pl.DataFrame(cols.levels, schema=SNAPSHOT_LEVELS_SCHEMA),
        book=pl.DataFrame(cols.book, schema=BOOK_SCHEMA),
        book_ticker=pl.DataFrame(cols.ticker, schema=TICKER_SCHEMA, orient="row"),
    )

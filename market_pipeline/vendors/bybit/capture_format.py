"""Bybit v5 captures: file naming and the public WebSocket `orderbook` messages.

A capture keeps the project's format (docs/capture.md): one WebSocket message a line,
``<receive time, ns since epoch> <message exactly as received>``, gzip (or encrypted), named
``bybit_<market>_<symbol>_<YYYYMMDD>.gz`` with Bybit's category as the market (`spot`,
`linear`, `inverse`: the messages do not say it) and the symbol lower case
(``bybit_linear_btcusdt_20251124.gz``).

Book messages: ``{"topic": "orderbook.<depth>.<symbol>", "type": "snapshot"|"delta", "ts",
"data": {"s", "b", "a", "u", "seq"}, "cts"}``, levels ``[price, size]`` as strings. The book is
the one depth above 1 in the file (50, 200, 1000...); `orderbook.1` (only snapshots, the best
bid and ask) is the top-of-book oracle. Trades (`publicTrade.<symbol>`) are counted;
subscription answers, pongs and other topics are skipped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from market_pipeline.vendors.capture_figures import TopQuote
from market_pipeline.vendors.exchange_books import Level

TOP_OF_BOOK_DEPTH = 1


@dataclass
class BookMessage:
    """One `orderbook.<depth>` message (depth > 1): a snapshot or a delta."""

    snapshot: bool
    depth: int
    symbol: str
    bids: list[Level]
    asks: list[Level]
    update_id: int  # `u`: +1 a message of the topic; 1 on a snapshot after Bybit's service restarted
    seq: int  # the matching engine's cross sequence, comparable across depths


@dataclass
class TopMessage:
    """One `orderbook.1` message."""

    symbol: str
    quote: TopQuote


@dataclass
class Trades:
    symbol: str
    count: int


def classify(message: Any) -> BookMessage | TopMessage | Trades | None:
    """What one decoded line is; raises ValueError (the reason) for a book message it cannot read."""
    if not isinstance(message, dict) or not isinstance(message.get("topic"), str):
        return None  # subscribe answers, pongs
    kind, _, rest = message["topic"].partition(".")
    if kind == "publicTrade":
        return Trades(rest, len(message.get("data") or []))
    if kind != "orderbook":
        return None  # tickers, klines, ...
    depth_text, _, symbol = rest.partition(".")
    if not depth_text.isdigit() or not symbol:
        raise ValueError(f"orderbook topic {message['topic']!r} is not orderbook.<depth>.<symbol>")
    data, kind = message.get("data"), message.get("type")
    if not isinstance(data, dict) or kind not in ("snapshot", "delta"):
        raise ValueError("orderbook message without type snapshot|delta and a data object")
    bids, asks = _levels(data, "b"), _levels(data, "a")
    depth, seq = int(depth_text), _integer(data, "seq")
    if depth == TOP_OF_BOOK_DEPTH:
        return TopMessage(symbol, TopQuote(seq, TOP_OF_BOOK_DEPTH, bids, asks))
    return BookMessage(kind == "snapshot", depth, symbol, bids, asks, _integer(data, "u"), seq)


def _integer(data: dict, key: str) -> int:
    value = data.get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"orderbook data {key} {value!r} is not an integer")
    return value


def _levels(data: dict, key: str) -> list[Level]:
    levels = data.get(key, [])
    if not isinstance(levels, list):
        raise ValueError(f"orderbook data {key} is not an array")
    out = []
    for level in levels:
        if not isinstance(level, list) or len(level) != 2 or not all(isinstance(text, str) for text in level):
            raise ValueError(f"orderbook level {level!r} is not [price, size] strings")
        out.append((level[0], level[1]))
    return out

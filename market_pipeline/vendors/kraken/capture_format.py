"""Kraken spot captures: file naming and the WebSocket `book` messages, v1 arrays and v2 objects.

A capture keeps the project's format (docs/capture.md): one WebSocket message a line,
``<receive time, ns since epoch> <message exactly as received>``, gzip (or encrypted, read by
`open_capture`), named ``kraken_spot_<symbol>_<YYYYMMDD>.gz`` where the symbol is the pair as the
file's messages spell it, lower case, the ``/`` removed (v1 ``XBT/USD`` -> ``xbtusd``, v2
``BTC/USD`` -> ``btcusd``).

Lines are decoded with JSON numbers as Decimals (`capture_files.decode_json`): v1 sends prices and quantities as
decimal strings, v2 as JSON numbers "with full precision" (trailing zeros kept, Kraken's book
checksum guide); both reach the book as the text the exchange sent, never as floats. Each book
line becomes a `BookMessage`; everything else (heartbeats, status, subscription answers without
a depth, other channels) is `None` except trades, which are counted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from market_pipeline.vendors.capture_files import decode_json as decode  # noqa: F401 - Kraken lines' reader

# Kraken's book subscription depths; a v2 capture without its subscribe answer gets the depth of
# its snapshot rounded up to one of these (a snapshot holds `depth` levels a side when the book
# is that deep).
BOOK_DEPTHS = (10, 25, 100, 500, 1000)

# One price level update as sent: (price text, quantity text); quantity 0 removes the level.
Level = tuple[str, str]


@dataclass
class BookMessage:
    """One `book` message of one pair: a snapshot (the book from scratch) or an update."""

    snapshot: bool
    symbol: str
    asks: list[Level] = field(default_factory=list)
    bids: list[Level] = field(default_factory=list)
    checksum: int | None = None  # the exchange's CRC32; v1 sends it on updates only
    depth: int | None = None  # the subscribed depth when the message says it (v1 channel name)


@dataclass
class Subscribed:
    """A subscription answer for the `book` channel, which gives the subscribed depth."""

    symbol: str
    depth: int


@dataclass
class Trades:
    count: int


def classify(message: Any) -> BookMessage | Subscribed | Trades | None:
    """What one decoded line is; raises ValueError (the reason) for a book message it cannot read."""
    if isinstance(message, list):
        return _classify_v1(message)
    if isinstance(message, dict):
        return _classify_v2(message) if "channel" in message or "method" in message else _classify_v1_event(message)
    raise ValueError("JSON line is neither a v1 array nor an object")


def _classify_v1_event(message: dict) -> Subscribed | None:
    if message.get("event") == "subscriptionStatus" and message.get("status") == "subscribed":
        subscription = message.get("subscription") or {}
        if subscription.get("name") == "book":
            return Subscribed(str(message.get("pair")), int(subscription.get("depth", 10)))
    return None  # heartbeat, systemStatus, pong, other subscriptions


def _classify_v1(message: list) -> BookMessage | Trades | None:
    # [channelID, payload, (payload,) channelName, pair]
    if len(message) < 4 or not isinstance(message[-2], str):
        raise ValueError("v1 array message is not [channelID, payload..., channelName, pair]")
    channel, symbol, payloads = message[-2], str(message[-1]), message[1:-2]
    if channel == "trade":
        return Trades(len(payloads[0]))
    if not channel.startswith("book-"):
        return None  # spread, ticker, ohlc: not replayed
    if not all(isinstance(p, dict) for p in payloads):
        raise ValueError("v1 book payload is not an object")
    depth = int(channel.removeprefix("book-"))
    if "as" in payloads[0] or "bs" in payloads[0]:
        book = BookMessage(True, symbol, depth=depth)
        book.asks = [_v1_level(level) for level in payloads[0].get("as", [])]
        book.bids = [_v1_level(level) for level in payloads[0].get("bs", [])]
        return book
    book = BookMessage(False, symbol, depth=depth)
    for payload in payloads:
        book.asks.extend(_v1_level(level) for level in payload.get("a", []))
        book.bids.extend(_v1_level(level) for level in payload.get("b", []))
        if "c" in payload:
            book.checksum = int(payload["c"])
    return book


def _v1_level(level: Any) -> Level:
    # [price, volume, timestamp] or [price, volume, timestamp, "r"]: a level republished because
    # it came back into scope after a truncation is applied like any other.
    if not isinstance(level, list) or len(level) < 3:
        raise ValueError(f"v1 book level {level!r} is not [price, volume, timestamp(, flag)]")
    return str(level[0]), str(level[1])


def _classify_v2(message: dict) -> BookMessage | Subscribed | Trades | None:
    if message.get("method") == "subscribe":
        result = message.get("result") or {}
        if message.get("success") and result.get("channel") == "book":
            return Subscribed(str(result.get("symbol")), int(result.get("depth", 10)))
        return None
    channel = message.get("channel")
    if channel == "trade":
        return Trades(len(message.get("data") or []))
    if channel != "book":
        return None  # heartbeat, status, instrument, ticker...
    kind, data = message.get("type"), message.get("data")
    if kind not in ("snapshot", "update") or not isinstance(data, list) or len(data) != 1:
        raise ValueError("v2 book message without type snapshot|update and one data object")
    entry = data[0]
    if not isinstance(entry, dict) or "symbol" not in entry:
        raise ValueError("v2 book data object without a symbol")
    book = BookMessage(kind == "snapshot", str(entry["symbol"]))
    book.asks = [_v2_level(level) for level in entry.get("asks", [])]
    book.bids = [_v2_level(level) for level in entry.get("bids", [])]
    if "checksum" in entry:
        book.checksum = int(entry["checksum"])
    return book


def _v2_level(level: Any) -> Level:
    if not isinstance(level, dict) or "price" not in level or "qty" not in level:
        raise ValueError(f"v2 book level {level!r} lacks price or qty")
    return str(level["price"]), str(level["qty"])


def snapshot_depth(book: BookMessage) -> int:
    """The subscribed depth a snapshot implies: its longer side rounded up to a Kraken depth."""
    levels = max(len(book.asks), len(book.bids))
    return next((d for d in BOOK_DEPTHS if d >= levels), levels)

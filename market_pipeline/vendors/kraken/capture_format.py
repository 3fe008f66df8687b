"""Kraken spot captures: file naming and the WebSocket `book` messages, v1 arrays and v2 objects.

A capture keeps the project's format (docs/capture.md): one WebSocket message a line,
``<receive time, ns since epoch> <message exactly as received>``, gzip (or encrypted, read by
`open_capture`), named ``kraken_spot_<symbol>_<YYYYMMDD>.gz`` where the symbol is the pair as the
file's messages spell it, lower case, the ``/`` removed (v1 ``XBT/USD`` -> ``xbtusd``, v2
``BTC/USD`` -> ``btcusd``).

Lines are decoded with JSON numbers as Decimals (`capture_files.decode_json`): v1 sends prices and quantities as
decimal strings, v2 as JSON numbers "with full precision" (trailing zeros kept, Kraken's book
checksum guide); both reach the book as the text the exchange sent, never as floats. Each book
line becomes a `BookMessage` (its times as sent: `time_ns` reads them, v2's `timestamp`, v1's
latest level timestamp); a `trade` line `Trades` (as sent: `trades` reads each trade's time, taker
side, price, quantity and id, v2's `trade_id`, none in v1); everything else (heartbeats, status,
subscription answers without a depth, other channels) is `None`. verify-capture needs neither
the times nor the trades' fields, so only the lake's tables read them.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from market_pipeline.vendors.capture_files import decode_json as decode  # noqa: F401 - Kraken lines' reader
from market_pipeline.vendors.exchange_books import exact

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
    stamps: list = field(default_factory=list)  # the exchange's times in the message (`time_ns`)


@dataclass(frozen=True)
class Trade:
    time_ns: int
    side: str  # the taker's: buy or sell
    price: str
    qty: str
    trade_id: str | None  # v2's trade_id; v1 trades have none


@dataclass
class Subscribed:
    """A subscription answer for the `book` channel, which gives the subscribed depth."""

    symbol: str
    depth: int


@dataclass
class Trades:
    """The trades of one `trade` message, as sent (`trades` reads them)."""

    symbol: str
    entries: list
    v1: bool
    snapshot: bool = False  # v2's trades of before the subscription (when asked for: `snapshot: true`)

    @property
    def count(self) -> int:
        return len(self.entries)


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
        return Trades(symbol, list(payloads[0]), v1=True)
    if not channel.startswith("book-"):
        return None  # spread, ticker, ohlc: not replayed
    if not all(isinstance(p, dict) for p in payloads):
        raise ValueError("v1 book payload is not an object")
    depth = int(channel.removeprefix("book-"))
    if "as" in payloads[0] or "bs" in payloads[0]:
        book = BookMessage(True, symbol, depth=depth)
        book.asks = [_v1_level(level) for level in payloads[0].get("as", [])]
        book.bids = [_v1_level(level) for level in payloads[0].get("bs", [])]
        stamps = [*payloads[0].get("as", []), *payloads[0].get("bs", [])]
    else:
        book = BookMessage(False, symbol, depth=depth)
        stamps = []
        for payload in payloads:
            book.asks.extend(_v1_level(level) for level in payload.get("a", []))
            book.bids.extend(_v1_level(level) for level in payload.get("b", []))
            stamps += [*payload.get("a", []), *payload.get("b", [])]
            if "c" in payload:
                book.checksum = int(payload["c"])
    book.stamps = [level[2] for level in stamps]
    return book


def _v1_level(level: Any) -> Level:
    # [price, volume, timestamp] or [price, volume, timestamp, "r"]: a level republished because
    # it came back into scope after a truncation is applied like any other.
    if not isinstance(level, list) or len(level) < 3:
        raise ValueError(f"v1 book level {level!r} is not [price, volume, timestamp(, flag)]")
    return str(level[0]), str(level[1])


def time_ns(book: BookMessage) -> int | None:
    """The exchange's time of a book message in ns: v2's `timestamp`, the latest of v1's level
    timestamps; None when it has none (a v2 snapshot may not)."""
    return max((_stamp_ns(stamp) for stamp in book.stamps), default=None)


def trades(message: Trades) -> list[Trade]:
    """The trades of a `trade` message; ValueError (the reason) for one that cannot be read."""
    return [_v1_trade(entry) if message.v1 else _v2_trade(entry) for entry in message.entries]


def _stamp_ns(stamp: Any) -> int:
    """v2's RFC 3339 time or v1's seconds since the epoch, in ns."""
    return _iso_ns(stamp) if "T" in str(stamp) else _epoch_ns(stamp)


def _epoch_ns(seconds: Any) -> int:
    """v1's "1534614057.321597" (seconds since the epoch, µs) in ns, exactly."""
    return int(exact(str(seconds), "timestamp").scaleb(9))


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def _iso_ns(stamp: Any) -> int:
    """v2's RFC 3339 "2023-09-25T07:49:37.708706Z" in ns since the epoch, exactly."""
    try:
        moment = dt.datetime.fromisoformat(str(stamp))
    except ValueError:
        raise ValueError(f"timestamp {stamp!r} is not an RFC 3339 time") from None
    if moment.tzinfo is None:
        raise ValueError(f"timestamp {stamp!r} has no time zone")
    return (moment - _EPOCH) // dt.timedelta(microseconds=1) * 1_000


def _v1_trade(trade: Any) -> Trade:
    # [price, volume, time, side "b"|"s", orderType, misc]: no trade id
    if not isinstance(trade, list) or len(trade) < 4 or trade[3] not in ("b", "s"):
        raise ValueError(f"v1 trade {trade!r} is not [price, volume, time, b|s, ...]")
    return Trade(_epoch_ns(trade[2]), "buy" if trade[3] == "b" else "sell", str(trade[0]), str(trade[1]), None)


def _v2_trade(trade: Any) -> Trade:
    if not isinstance(trade, dict) or trade.get("side") not in ("buy", "sell"):
        raise ValueError(f"v2 trade {trade!r} has no side buy|sell")
    for key in ("price", "qty", "timestamp"):
        if key not in trade:
            raise ValueError(f"v2 trade {trade!r} lacks {key}")
    trade_id = trade.get("trade_id")
    return Trade(
        _iso_ns(trade["timestamp"]),
        trade["side"],
        str(trade["price"]),
        str(trade["qty"]),
        None if trade_id is None else str(trade_id),
    )


def _classify_v2(message: dict) -> BookMessage | Subscribed | Trades | None:
    if message.get("method") == "subscribe":
        result = message.get("result") or {}
        if message.get("success") and result.get("channel") == "book":
            return Subscribed(str(result.get("symbol")), int(result.get("depth", 10)))
        return None
    channel = message.get("channel")
    if channel == "trade":
        data = message.get("data") or []
        snapshot = message.get("type") == "snapshot"
        return Trades(str(data[0].get("symbol")), data, v1=False, snapshot=snapshot) if data else None
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
    if "timestamp" in entry:
        book.stamps = [entry["timestamp"]]
    return book


def _v2_level(level: Any) -> Level:
    if not isinstance(level, dict) or "price" not in level or "qty" not in level:
        raise ValueError(f"v2 book level {level!r} lacks price or qty")
    return str(level["price"]), str(level["qty"])


def subscribed_depth(snapshot: BookMessage, subscribed: int | None) -> int:
    """The depth a snapshot's book is kept at: its v1 channel's, else the subscription answer's
    (`subscribed`, when the capture has one), else what the snapshot implies."""
    return snapshot.depth or subscribed or snapshot_depth(snapshot)


def snapshot_depth(book: BookMessage) -> int:
    """The subscribed depth a snapshot implies: its longer side rounded up to a Kraken depth."""
    levels = max(len(book.asks), len(book.bids))
    return next((d for d in BOOK_DEPTHS if d >= levels), levels)

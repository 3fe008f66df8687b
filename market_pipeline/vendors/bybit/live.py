"""What the recorder subscribes to on Bybit (v5 public WebSocket of a category): `orderbook.<depth>`,
`orderbook.1` (its top-of-book oracle) and `publicTrade` of one symbol. Bybit answers a book
subscription with a snapshot and asks clients to send `{"op":"ping"}` every 20 s to keep the
connection (its JSON answer is written like any message and skipped by the reader); a reconnect
subscribes again and the new snapshot resyncs the book."""

from __future__ import annotations

import json
import re

from market_pipeline.vendors.live_capture.subscribed import SubscribedFeed

PUBLIC_URLS = {
    "spot": "wss://stream.bybit.com/v5/public/spot",
    "linear": "wss://stream.bybit.com/v5/public/linear",
    "inverse": "wss://stream.bybit.com/v5/public/inverse",
}
MARKETS = tuple(PUBLIC_URLS)
DEFAULT_DEPTH = 50
BOOK_DEPTHS = (50, 200, 500, 1000)  # above 1 (orderbook.1 is the top-of-book oracle)
_SYMBOL_RE = re.compile(r"^[A-Z0-9]{2,30}$")


def feed(market: str, symbol: str, depth: int | None = None, url: str | None = None) -> SubscribedFeed:
    """The streams of `symbol` (Bybit's, e.g. BTCUSDT) in the category `market`; ValueError naming
    the option when the market, the symbol or the depth cannot be Bybit's."""
    if market not in PUBLIC_URLS:
        raise ValueError(f"--market {market!r} is not a Bybit category ({', '.join(MARKETS)})")
    name = symbol.upper()
    if not _SYMBOL_RE.match(name):
        raise ValueError(f"--symbol {symbol!r} is not a Bybit symbol like BTCUSDT")
    depth = DEFAULT_DEPTH if depth is None else depth
    if depth not in BOOK_DEPTHS:
        raise ValueError(f"--depth {depth} is not a Bybit book depth ({', '.join(map(str, BOOK_DEPTHS))})")
    topics = [f"orderbook.{depth}.{name}", f"orderbook.1.{name}", f"publicTrade.{name}"]
    subscribe = (json.dumps({"op": "subscribe", "args": topics}),)
    ping = json.dumps({"op": "ping"})
    return SubscribedFeed("bybit", market, name.lower(), url or PUBLIC_URLS[market], subscribe, ping=ping)

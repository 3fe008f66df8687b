"""What the recorder subscribes to on Kraken: the WebSocket v2 `book` channel at a depth, and
`trade`, of one spot pair. Kraken answers a `book` subscription with a snapshot, sends a
heartbeat every second while subscribed (so the read-idle timeout sees a live feed) and needs no
application ping; a reconnect subscribes again and the new snapshot resyncs the book."""

from __future__ import annotations

import json
import re

from market_pipeline.vendors.kraken.capture_format import BOOK_DEPTHS
from market_pipeline.vendors.live_capture.subscribed import SubscribedFeed

WEBSOCKET_V2_URL = "wss://ws.kraken.com/v2"
MARKETS = ("spot",)
DEFAULT_DEPTH = 10  # the checksum covers the top 10 levels
_PAIR_RE = re.compile(r"^[A-Z0-9]{2,12}/[A-Z0-9]{2,12}$")


def feed(market: str, symbol: str, depth: int | None = None, url: str | None = None) -> SubscribedFeed:
    """The streams of the spot pair `symbol` (as Kraken's v2 API spells it, e.g. BTC/USD); ValueError
    naming the option when the market, the pair or the depth cannot be Kraken's."""
    if market not in MARKETS:
        raise ValueError(f"--market {market!r}: the recorder takes Kraken's {', '.join(MARKETS)} market")
    depth = DEFAULT_DEPTH if depth is None else depth
    pair = symbol.upper()
    if not _PAIR_RE.match(pair):
        raise ValueError(f"--symbol {symbol!r} is not a Kraken v2 pair like BTC/USD")
    if depth not in BOOK_DEPTHS:
        raise ValueError(f"--depth {depth} is not a Kraken book depth ({', '.join(map(str, BOOK_DEPTHS))})")
    subscribe = (
        json.dumps({"method": "subscribe", "params": {"channel": "book", "symbol": [pair], "depth": depth}}),
        json.dumps({"method": "subscribe", "params": {"channel": "trade", "symbol": [pair]}}),
    )
    return SubscribedFeed("kraken", market, pair.replace("/", "").lower(), url or WEBSOCKET_V2_URL, subscribe)

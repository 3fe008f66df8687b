"""What the recorder subscribes to on OKX (v5 public WebSocket): one incremental book channel,
`bbo-tbt` (its top-of-book oracle) and `trades` of one instrument. OKX answers a book subscription
with a snapshot and closes a connection that receives nothing for 30 s, so the recorder sends
OKX's text `ping` every 20 s (its `pong` answer is not written); a reconnect subscribes again and
the new snapshot resyncs the book."""

from __future__ import annotations

import json
import re

from market_pipeline.vendors.live_capture.subscribed import SubscribedFeed
from market_pipeline.vendors.okx.capture_format import BOOK_DEPTHS, market_of

PUBLIC_URL = "wss://ws.okx.com:8443/ws/v5/public"
MARKETS = ("spot", "swap", "futures")
DEFAULT_DEPTH = 400
# The public book channel of each depth (the `-l2-tbt` channels of 400 levels need a VIP login).
_CHANNELS = {400: "books", 50: "books50-l2-tbt"}
_INST_ID_RE = re.compile(r"^[A-Z0-9]{1,12}(-[A-Z0-9]{1,12}){1,2}$")


def feed(market: str, symbol: str, depth: int | None = None, url: str | None = None) -> SubscribedFeed:
    """The streams of the instrument `symbol` (OKX's id, e.g. BTC-USDT or BTC-USDT-SWAP); ValueError
    naming the option when the id, its market or the depth cannot be OKX's."""
    inst_id = symbol.upper()
    if not _INST_ID_RE.match(inst_id):
        raise ValueError(f"--symbol {symbol!r} is not an OKX instrument id like BTC-USDT or BTC-USDT-SWAP")
    if market_of(inst_id) != market:
        raise ValueError(f"--symbol {inst_id} is an OKX {market_of(inst_id)} instrument, not --market {market}")
    depth = DEFAULT_DEPTH if depth is None else depth
    channel = _CHANNELS.get(depth)
    if channel is None or channel not in BOOK_DEPTHS:
        raise ValueError(f"--depth {depth} is not an OKX public book depth ({', '.join(map(str, _CHANNELS))})")
    args = [{"channel": name, "instId": inst_id} for name in (channel, "bbo-tbt", "trades")]
    subscribe = (json.dumps({"op": "subscribe", "args": args}),)
    return SubscribedFeed(
        "okx", market, inst_id.lower(), url or PUBLIC_URL, subscribe, ping="ping", pong="pong", ping_seconds=20.0
    )

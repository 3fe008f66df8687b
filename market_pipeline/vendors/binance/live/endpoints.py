"""Binance endpoints per market, and the combined-stream and snapshot URLs."""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlencode

SNAPSHOT_LIMIT = 1000  # levels a side; the shared captures hold 1000-level snapshots
DEPTH_SPEED = "100ms"
_SYMBOL_RE = re.compile(r"^[A-Za-z0-9_]{2,40}$")


@dataclass(frozen=True)
class MarketEndpoints:
    stream_base: str  # combined-stream endpoint; `?streams=a/b/c` is appended
    depth_url: str  # REST depth snapshot; `?symbol=...&limit=...` is appended


DEFAULT_ENDPOINTS = {
    "spot": MarketEndpoints("wss://stream.binance.com:9443/stream", "https://api.binance.com/api/v3/depth"),
    "usdm": MarketEndpoints("wss://fstream.binance.com/stream", "https://fapi.binance.com/fapi/v1/depth"),
    "coinm": MarketEndpoints("wss://dstream.binance.com/stream", "https://dapi.binance.com/dapi/v1/depth"),
}


def check_symbol(symbol: str) -> str:
    """The symbol as Binance streams spell it (lower case); ValueError when it cannot be one."""
    if not _SYMBOL_RE.match(symbol):
        raise ValueError(f"--symbol {symbol!r} is not a Binance symbol (letters, digits, '_')")
    return symbol.lower()


def stream_names(symbol: str) -> list[str]:
    """Depth diffs, best bid/ask and trades of one symbol."""
    s = check_symbol(symbol)
    return [f"{s}@depth@{DEPTH_SPEED}", f"{s}@bookTicker", f"{s}@trade"]


def _with_query(base: str, query: str) -> str:
    return f"{base}{'&' if '?' in base else '?'}{query}"


def stream_url(base: str, symbol: str) -> str:
    # Stream names stay unescaped ('@' and '/'), as Binance documents them.
    return _with_query(base, "streams=" + "/".join(stream_names(symbol)))


def snapshot_url(base: str, symbol: str) -> str:
    return _with_query(base, urlencode({"symbol": check_symbol(symbol).upper(), "limit": SNAPSHOT_LIMIT}))

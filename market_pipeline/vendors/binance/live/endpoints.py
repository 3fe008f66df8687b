"""Binance endpoints per market, the combined-stream and snapshot URLs, and the TLS policy."""

from __future__ import annotations

import re
import ssl
from dataclasses import dataclass
from urllib.parse import urlencode, urlsplit

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


def check_scheme(url: str, option: str, secure: str, plain: str, allow_plaintext: bool) -> None:
    """Require the TLS scheme (`secure`); the plaintext one only with --allow-plaintext."""
    scheme = urlsplit(url).scheme
    if scheme == secure or (scheme == plain and allow_plaintext):
        return
    if scheme == plain:
        raise ValueError(
            f"{option}: plaintext {plain}:// is refused; market data must travel over TLS "
            f"({secure}://). --allow-plaintext exists for local test servers only"
        )
    raise ValueError(f"{option}: expected a {secure}:// URL, got scheme {scheme!r}")


TLS_VERSIONS = {"1.3": ssl.TLSVersion.TLSv1_3, "1.2": ssl.TLSVersion.TLSv1_2}


def tls_context(min_version: str = "1.3") -> ssl.SSLContext:
    """Certificate and host-name checks against the system CAs; TLS 1.3 only unless `min_version`
    is "1.2" (`PIPELINE_CAPTURE__TLS_MIN_VERSION`)."""
    context = ssl.create_default_context()
    context.minimum_version = TLS_VERSIONS[min_version]
    return context

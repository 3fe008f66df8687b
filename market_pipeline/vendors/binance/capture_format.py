"""Raw Binance WebSocket captures -> Crypto Lake shaped columnar tables.

A capture is text, one message a line: ``<local receive time, ns since epoch> <raw JSON>``. The JSON
is a combined-stream message ``{"stream": "btcusdt@depth@0ms", "data": {...}}`` (depth diff,
``@bookTicker`` or ``@trade``) or a REST depth snapshot ``{"lastUpdateId": ..., "bids": ...,
"asks": ...}``. Files may be gzip-compressed.

Two views of the same lines:

* ``iter_messages`` yields the decoded JSON untouched, so prices and sizes stay exact decimal
  strings (the Decimal reference replay in the tests uses it);
* ``capture_stream.CaptureParser`` builds, chunk by chunk, polars tables with the schemas of
  ``market_pipeline.core.lake.schemas`` (prices and sizes as float64, times as int64 ns). Every
  table keeps the capture's line order; ``book_delta_v2``, ``depth_snapshot`` and
  ``book_ticker`` also carry ``line_no`` (the 0-based line index in the concatenated input) as
  their last column, so a replay can interleave them exactly as captured: the REST snapshot line
  arrives a few diffs after the diffs that bracket its ``lastUpdateId``, and receive times are
  not a reliable order key across streams.
  ``parse_capture`` concatenates its chunks (small inputs, tests).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import polars as pl

from market_pipeline.core.lake.schemas import (
    BOOK_DELTA_SCHEMA,
    BOOK_TICKER_SCHEMA,
    CAPTURE_DELTA_EXTRA_SCHEMA,
    DEPTH_SNAPSHOT_SCHEMA,
)
from market_pipeline.vendors.capture_files import CaptureFormatError, located_lines

MARKETS = ("spot", "usdm", "coinm")

# Crypto Lake exchange names; coin-margined contracts are cryptofeed's BINANCE_DELIVERY.
LAKE_EXCHANGES = {"spot": "BINANCE", "usdm": "BINANCE_FUTURES", "coinm": "BINANCE_DELIVERY"}

# Binance spells a pair as base+quote with no separator; the quote is recognised by suffix.
# Longest first so that e.g. FDUSD/USDT win over USD.
KNOWN_QUOTES = tuple(
    sorted(
        (
            "USDT",
            "USDC",
            "FDUSD",
            "BUSD",
            "TUSD",
            "USDP",
            "DAI",
            "USD",
            "BTC",
            "ETH",
            "BNB",
            "XRP",
            "TRX",
            "DOGE",
            "EUR",
            "TRY",
            "BRL",
            "GBP",
            "AUD",
            "JPY",
            "RUB",
            "UAH",
            "ZAR",
            "PLN",
            "ARS",
            "MXN",
        ),
        key=len,
        reverse=True,
    )
)

NS_PER_MS = 1_000_000
NS_PER_DAY = 86_400 * 1_000_000_000

# JSON fields each message kind must carry (others are ignored).
_REQUIRED = {
    "diff": frozenset(("E", "U", "u", "b", "a")),
    "ticker": frozenset(("u", "b", "B", "a", "A")),
    "trade": frozenset(("t", "p", "q", "T", "m")),
    "snapshot": frozenset(("lastUpdateId", "bids", "asks")),
}
# Combined-stream channel (the part after the first '@' and before any '@speed') -> kind.
# Partial-depth streams (depth5/10/20) are snapshots of the top, not diffs: they are rejected.
CHANNEL_KINDS = {"depth": "diff", "bookTicker": "ticker", "trade": "trade"}

DELTA_SCHEMA: dict[str, pl.DataType] = {
    **BOOK_DELTA_SCHEMA,
    **CAPTURE_DELTA_EXTRA_SCHEMA,
    "line_no": pl.Int64(),
}
SNAPSHOT_LEVELS_SCHEMA: dict[str, pl.DataType] = {**DEPTH_SNAPSHOT_SCHEMA, "line_no": pl.Int64()}
TICKER_SCHEMA: dict[str, pl.DataType] = {**BOOK_TICKER_SCHEMA, "line_no": pl.Int64()}


# --- instrument naming -------------------------------------------------------------------------


def binance_market_of(path: Path | str) -> str | None:
    """Market from a capture file name ``binance_{spot,usdm,coinm}_...``; None when not named so."""
    parts = Path(path).name.lower().split("_")
    if len(parts) > 1 and parts[0] == "binance" and parts[1] in MARKETS:
        return parts[1]
    return None


def market_of_diff(diff: dict[str, Any]) -> str:
    """Market from a diff's shape: futures diffs chain with ``pu``; COIN-M pairs end in USD."""
    return diff_market("pu" in diff, diff.get("s", ""))


def diff_market(has_pu: bool, symbol: object) -> str:
    """`market_of_diff` from whether the diff has ``pu`` and its symbol field ``s``."""
    if not has_pu:
        return "spot"
    pair = str(symbol).upper().split("_")[0]
    return "coinm" if pair.endswith("USD") else "usdm"


def split_pair(pair: str) -> tuple[str, str]:
    """``BTCUSDT`` -> (``BTC``, ``USDT``) by the known quote assets."""
    pair = pair.upper()
    for quote in KNOWN_QUOTES:
        if pair.endswith(quote) and len(pair) > len(quote):
            return pair[: -len(quote)], quote
    raise ValueError(f"cannot split {pair!r} into base and quote asset")


def lake_instrument(market: str, binance_symbol: str) -> tuple[str, str]:
    """Crypto Lake (exchange, symbol) of a Binance symbol.

    spot ``BTCUSDT`` -> (BINANCE, BTC-USDT); usdm ``BTCUSDT`` -> (BINANCE_FUTURES, BTC-USDT-PERP);
    coinm ``BTCUSD_PERP`` -> (BINANCE_DELIVERY, BTC-USD-PERP); dated contracts keep their expiry
    (``BTCUSDT_240927`` -> BTC-USDT-240927).
    """
    if market not in LAKE_EXCHANGES:
        raise ValueError(f"unknown Binance market {market!r}; expected one of {MARKETS}")
    pair, _, contract = binance_symbol.upper().partition("_")
    base, quote = split_pair(pair)
    if market == "spot":
        return LAKE_EXCHANGES[market], f"{base}-{quote}"
    return LAKE_EXCHANGES[market], f"{base}-{quote}-{contract or 'PERP'}"


# --- reading lines -----------------------------------------------------------------------------


def _classify(obj: Any) -> tuple[str, dict[str, Any]]:
    """(kind, payload) of one decoded line; raises ValueError with the reason otherwise."""
    if not isinstance(obj, dict):
        raise ValueError("JSON line is not an object")
    if "stream" in obj:
        stream, payload = obj["stream"], obj.get("data")
        if not isinstance(stream, str) or not isinstance(payload, dict):
            raise ValueError("combined-stream message without a string 'stream' and object 'data'")
        kind = CHANNEL_KINDS.get(stream.partition("@")[2].partition("@")[0])
        if kind is None:
            raise ValueError(f"unsupported stream {stream!r}")
    elif "lastUpdateId" in obj:
        kind, payload = "snapshot", obj
    else:
        raise ValueError("neither a combined-stream message nor a REST depth snapshot")
    if not payload.keys() >= _REQUIRED[kind]:
        missing = ", ".join(sorted(_REQUIRED[kind] - payload.keys()))
        raise ValueError(f"{kind} message lacks field(s) {missing}")
    return kind, payload


def _iter_located(
    paths: Sequence[Path],
) -> Iterator[tuple[Path, int, int, int, str, dict[str, Any]]]:
    """(path, 1-based line in file, 0-based line in the concatenation, recv ns, kind, payload)."""
    for line_no, (path, line_number, recv_ns, body) in enumerate(located_lines(paths)):
        try:
            kind, payload = _classify(json.loads(body))
        except ValueError as exc:  # json.JSONDecodeError is a ValueError
            raise CaptureFormatError(path, line_number, str(exc)) from None
        yield path, line_number, line_no, recv_ns, kind, payload


def iter_messages(paths: Sequence[Path]) -> Iterator[tuple[int, int, str, dict[str, Any]]]:
    """Yield ``(line_no, recv_ns, kind, payload)`` for every line of the files, in order.

    ``kind`` is ``diff``, ``snapshot``, ``ticker`` or ``trade``; ``payload`` is the stream's
    ``data`` object (or the whole REST snapshot) as decoded by ``json.loads``, so prices and
    quantities are the exchange's decimal strings.
    """
    for _, _, line_no, recv_ns, kind, payload in _iter_located(paths):
        yield line_no, recv_ns, kind, payload


# --- tables ------------------------------------------------------------------------------------

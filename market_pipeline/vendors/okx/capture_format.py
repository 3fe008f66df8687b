"""OKX v5 captures: file naming and the public WebSocket order book messages.

A capture keeps the project's format (docs/capture.md): one WebSocket message a line,
``<receive time, ns since epoch> <message exactly as received>``, gzip (or encrypted), named
``okx_<market>_<symbol>_<YYYYMMDD>.gz`` with the instrument id lower case (``okx_spot_btc-usdt_
20251124.gz`` for ``BTC-USDT``, ``okx_swap_btc-usdt-swap_...`` for ``BTC-USDT-SWAP``).

The book is one of the incremental channels (`books`: 400 levels, `books-l2-tbt`: 400,
`books50-l2-tbt`: 50): ``{"arg": {"channel", "instId"}, "action": "snapshot"|"update", "data":
[{"asks", "bids", "ts", "checksum", "prevSeqId", "seqId"}]}``, levels ``[price, size, "0",
orders]`` as strings. `bbo-tbt` (the best level) and `books5` (the best five) send a whole top
of book each time, with the `seqId` of the book state they show: a top-of-book oracle. Trades
(`trades`, `trades-all`) are counted; subscription answers, errors, "pong" and other channels
are skipped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from market_pipeline.vendors.capture_figures import TopQuote
from market_pipeline.vendors.exchange_books import Level

# The incremental book channels and their depth (the snapshot's levels a side).
BOOK_DEPTHS = {"books": 400, "books-l2-tbt": 400, "books50-l2-tbt": 50}
# The top-of-book channels and the levels a side each message holds.
TOP_DEPTHS = {"bbo-tbt": 1, "books5": 5}
TRADE_CHANNELS = ("trades", "trades-all")


@dataclass
class BookMessage:
    """One message of an incremental book channel: a snapshot (prevSeqId -1) or an update."""

    snapshot: bool
    channel: str
    inst_id: str
    bids: list[Level]
    asks: list[Level]
    seq_id: int
    prev_seq_id: int
    checksum: int  # OKX's signed CRC32 of the top 25 levels; 0 since the field's retirement (2026)


@dataclass
class TopMessage:
    """One `bbo-tbt` or `books5` message."""

    inst_id: str
    quote: TopQuote


@dataclass
class Trades:
    inst_id: str
    count: int


def classify(message: Any) -> BookMessage | TopMessage | Trades | None:
    """What one decoded line is; raises ValueError (the reason) for a book message it cannot read."""
    if not isinstance(message, dict) or "event" in message:
        return None  # "pong" (a JSON string), subscribe answers, errors, notices
    arg = message.get("arg")
    if not isinstance(arg, dict):
        return None
    channel, inst_id = arg.get("channel"), str(arg.get("instId"))
    if channel in TRADE_CHANNELS:
        return Trades(inst_id, len(message.get("data") or []))
    if channel not in BOOK_DEPTHS and channel not in TOP_DEPTHS:
        return None  # tickers, candles, ...
    data = message.get("data")
    if not isinstance(data, list) or len(data) != 1 or not isinstance(data[0], dict):
        raise ValueError(f"{channel} message without one data object")
    entry = data[0]
    bids, asks = _levels(entry, "bids"), _levels(entry, "asks")
    if channel in TOP_DEPTHS:
        return TopMessage(inst_id, TopQuote(_integer(entry, "seqId"), TOP_DEPTHS[channel], bids, asks))
    action = message.get("action")
    if action not in ("snapshot", "update"):
        raise ValueError(f"{channel} message with action {action!r}, not snapshot|update")
    return BookMessage(
        action == "snapshot",
        channel,
        inst_id,
        bids,
        asks,
        _integer(entry, "seqId"),
        _integer(entry, "prevSeqId"),
        _integer(entry, "checksum") if "checksum" in entry else 0,
    )


def _integer(entry: dict, key: str) -> int:
    value = entry.get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"book data {key} {value!r} is not an integer")
    return value


def _levels(entry: dict, key: str) -> list[Level]:
    levels = entry.get(key, [])
    if not isinstance(levels, list):
        raise ValueError(f"book data {key} is not an array")
    out = []
    for level in levels:
        if (
            not isinstance(level, list)
            or len(level) < 2
            or not isinstance(level[0], str)
            or not isinstance(level[1], str)
        ):
            raise ValueError(f"book level {level!r} is not [price, size, ...] strings")
        out.append((level[0], level[1]))
    return out


def market_of(inst_id: str) -> str:
    """OKX's instrument type from the id: BTC-USDT spot, BTC-USDT-SWAP swap, BTC-USD-251226
    futures, BTC-USD-251226-100000-C option."""
    parts = inst_id.split("-")
    if parts[-1] == "SWAP":
        return "swap"
    if len(parts) == 5:
        return "option"
    if len(parts) == 3:
        return "futures"
    return "spot"

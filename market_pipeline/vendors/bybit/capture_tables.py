"""Bybit v5 captures -> the lake's tables, chunk by chunk (`PIPELINE_SOURCE`/reference `bybit_capture`).

The lines of one instrument's capture files (`capture_format`) become, `CHUNK_LINES` lines at a
time, the shared tables (`vendors/capture_tables.py`):

- `book_delta_v2`: a row per level of every `orderbook.<depth>` message (depth above 1; bids,
  then asks, in the message's order; size 0 removes the level), `sequence_number` = Bybit's
  `seq` (the matching engine's cross sequence: the number `orderbook.1` carries too, so a quote
  is matched to the book state it shows; the topic's own `u` counts messages of one depth only
  and restarts at 1), `first_update_id` = the `seq`, `prev_update_id` = the `seq` of the previous
  book message when this delta's `u` follows that message's `u` (Bybit's chain holds, as a
  futures diff's `pu`; across the recorder's hourly files too, `follow`), null on a snapshot and
  on a delta after lost messages (the chain check and the book replay then see a break), `origin_time` = the
  message's `ts` (ms) in ns, `is_snapshot` on a snapshot's rows (the generic replay clears the
  book before them: a reconnect's snapshot and a `u` = 1 restart resync it), `line_no` the line
  in the files. A message without levels has no row;
- `book`: the best `BOOK_LEVELS` a side of every snapshot, `sequence_number` its `seq`;
- `book_ticker`: every `orderbook.1` message with both sides, `update_id` its `seq`;
- `trades`: every `publicTrade` entry, `trade_id` Bybit's `i`, `side` the taker's (`S`), `origin_time` its `T`.

The market (Bybit's category: `spot`, `linear`, `inverse`) is the file name's, as the messages do
not say it; the lake's instrument is Crypto Lake's (cryptofeed's) name: `BYBIT:BTC-USDT` for the
spot pair BTCUSDT, `BYBIT:BTC-USDT-PERP` for the linear perpetual, `BYBIT:BTC-USD-PERP` for the
inverse one (`lake_symbol`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from market_pipeline.vendors.bybit import capture_format as fmt
from market_pipeline.vendors.capture_files import CaptureFormatError, decode_json
from market_pipeline.vendors.capture_source import name_parts
from market_pipeline.vendors.capture_tables import NS_PER_MS, ChunkedCaptureParser, LineStamp, TableRows, text_field

LAKE_EXCHANGE = "BYBIT"
CATEGORIES = ("spot", "linear", "inverse")
# Quote coins a Bybit symbol ends with, the longer before the shorter (USDT before USD).
QUOTES = ("USDT", "USDC", "USDE", "EUR", "BRL", "BRZ", "DAI", "BTC", "ETH", "USD")
_SIDES = {"Buy": "buy", "Sell": "sell"}


def lake_symbol(category: str, symbol: str) -> str:
    """The lake's symbol of a Bybit symbol of a category, as Crypto Lake (cryptofeed) names it:
    spot BTCUSDT -> BTC-USDT, linear BTCUSDT -> BTC-USDT-PERP (a USDC perpetual BTCPERP ->
    BTC-USDC-PERP), inverse BTCUSD -> BTC-USD-PERP. ValueError for a dated contract or a symbol
    whose quote coin is not one of QUOTES."""
    symbol = symbol.upper()
    if category not in CATEGORIES:
        raise ValueError(f"{category!r} is not a Bybit category ({', '.join(CATEGORIES)})")
    if category == "linear" and symbol.endswith("PERP") and symbol != "PERP":
        return f"{symbol.removesuffix('PERP')}-USDC-PERP"
    quote = next((q for q in QUOTES if symbol.endswith(q) and len(symbol) > len(q)), None)
    if quote is None or "-" in symbol or (category == "inverse") != (quote == "USD"):
        kind = {"spot": "a spot pair", "linear": "a linear perpetual", "inverse": "an inverse perpetual"}[category]
        raise ValueError(f"Bybit symbol {symbol} ({category}) is not {kind} the lake names")
    pair = f"{symbol.removesuffix(quote)}-{quote}"
    return pair if category == "spot" else f"{pair}-PERP"


def file_category(path: Path) -> str | None:
    """The category of a name like ``bybit_linear_btcusdt_20251124.gz``, None for another name."""
    parts = name_parts(path)
    return parts[1] if len(parts) >= 3 and parts[0] == "bybit" and parts[1] in CATEGORIES else None


class BybitCaptureParser(ChunkedCaptureParser):
    """The Bybit capture files of ONE instrument, in time order, parsed chunk by chunk
    (`ChunkedCaptureParser`); `instrument()` then tells the category and the lake's exchange and symbol."""

    def __init__(self, paths: Sequence[Path], chunk_lines: int | None = None) -> None:
        super().__init__(paths, chunk_lines)
        self.depth: int | None = None  # the book topic's
        self.last_u: int | None = None  # the last book message's u
        self.last_seq: int | None = None  # the seq of the last book message with rows

    def follow(self, previous: ChunkedCaptureParser) -> None:
        """The chain goes on across files: a first delta whose `u` follows the last one of the
        file before is chained to that file's last book message (another one is a break)."""
        if isinstance(previous, BybitCaptureParser):
            self.last_u, self.last_seq = previous.last_u, previous.last_seq

    def instrument(self) -> tuple[str, str, str]:
        """(Bybit category, the lake's exchange, the lake's symbol) of the lines read."""
        category = file_category(self.paths[0])
        if category is None:
            reason = "a Bybit capture is named bybit_<spot|linear|inverse>_<symbol>_<YYYYMMDD>.gz (the category)"
            raise CaptureFormatError(self.paths[0], None, reason)
        if self.instrument_id is None:
            raise CaptureFormatError(self.paths[0], None, "no Bybit orderbook or publicTrade message names a symbol")
        try:
            return category, LAKE_EXCHANGE, lake_symbol(category, self.instrument_id)
        except ValueError as exc:
            raise CaptureFormatError(self.paths[0], None, str(exc)) from None

    def line(self, rows: TableRows, at: LineStamp, body: str) -> None:
        message = decode_json(body)
        item = fmt.classify(message)
        if item is None:
            return  # subscribe answers, pongs, other topics
        self.one_instrument(item.symbol)
        if isinstance(item, fmt.Trades):
            for trade in message["data"]:
                row = (_ms_ns(trade, "T"), at.recv_ns, _side(trade), text_field(trade, "p"), text_field(trade, "v"))
                rows.add("trades", (*row, text_field(trade, "i")), at.line_number)
            return
        origin = _ms_ns(message, "ts")
        if isinstance(item, fmt.TopMessage):
            rows.add_quote(at, origin, item.quote)
            return
        if self.depth is None:
            self.depth = item.depth
        elif item.depth != self.depth:
            raise ValueError(f"orderbook.{item.depth} in a capture of orderbook.{self.depth}: one book topic a file")
        follows = not item.snapshot and self.last_u is not None and item.update_id == self.last_u + 1
        prev = self.last_seq if follows else None
        self.last_u = item.update_id
        if item.bids or item.asks:
            self.last_seq = item.seq
            rows.add_book_message(at, origin, item.seq, prev, (item.bids, item.asks), item.snapshot)


def _side(trade: dict[str, Any]) -> str:
    side = trade.get("S")
    if not isinstance(side, str) or side not in _SIDES:
        raise ValueError(f"trade side S {side!r} is not Buy|Sell")
    return _SIDES[side]


def _ms_ns(entry: dict[str, Any], key: str) -> int:
    """Bybit's ms timestamp (an integer) in ns."""
    value = entry.get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{key} {value!r} is not a timestamp in ms")
    return value * NS_PER_MS

"""Kraken spot captures -> the lake's tables, chunk by chunk (`PIPELINE_SOURCE`/reference `kraken_capture`).

The lines of one pair's capture files (`capture_format`, v1 and v2 alike) become, `CHUNK_LINES`
lines at a time (memory is set by the chunk and the book, at most the subscribed depth a side):

- `book_delta_v2`: a row per level of every `book` message (asks, then bids, in the message's
  order; quantity 0 removes the level, a republished level is a level like any other), then a
  row of size 0 for every level the message pushed out of the subscribed depth: Kraken sends no
  removal for those (its truncation rule), so the rows say what the exchange's book did and the
  generic replay, which does not truncate, keeps Kraken's book exactly. `is_snapshot` on the rows
  of a snapshot (the replay clears the book before them: a reconnect's snapshot resyncs it).
  Kraken numbers no message: `sequence_number` is the line's receive time (it grows along the
  capture, as the replay needs, and proves no gap: "monotonic"), `first_update_id` the same. What
  proves a gap is Kraken's checksum: the parser keeps the book (for the truncation) and checks
  every checksum a message carries against it, as verify-capture does; the chain column
  `prev_update_id` names the previous book message's `sequence_number`, except on a message whose
  checksum disagrees (-1: the chain breaks there), so the raw check's `chain_breaks` and the
  generic replay (books unsynced until the next snapshot) see Kraken's mismatches as the breaks
  of OKX's and Bybit's chains. After a mismatch no checksum is checked until the next snapshot
  (verify-capture drops those updates). `origin_time` is the
  message's exchange time (v2 `timestamp`, v1 the latest of its levels' timestamps), the receive
  time when it has none;
- `book`: the best `BOOK_LEVELS` a side of every snapshot (at most the subscribed depth);
- `trades`: every trade of the `trade` channel, `trade_id` v2's `trade_id` (v1 trades have none:
  null), `side` the taker's, `origin_time` the trade's time; a v2 trade snapshot (the trades of
  before the subscription, sent when asked for, again on every resubscription) has none.
There is no `book_ticker`: the recorder subscribes to no top-of-book stream on Kraken.

The book the truncation needs is kept across the files of a session: a file that continues one
(no snapshot before its first update: the recorder's next hourly file) starts from the previous
file's book (`follow`); its updates before a snapshot without one are written as sent.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import polars as pl

from market_pipeline.core.lake.schemas import BOOK_LEVELS, BOOK_SCHEMA, TRADES_SCHEMA
from market_pipeline.vendors.capture_files import CaptureFormatError
from market_pipeline.vendors.capture_tables import DELTA_SCHEMA, ChunkedCaptureParser, LineStamp, TableRows, top_levels
from market_pipeline.vendors.kraken import capture_format as fmt
from market_pipeline.vendors.kraken.book import KrakenBook, fixed_text

LAKE_EXCHANGE = "KRAKEN"
LINE_ORDERED = ("book_delta_v2",)
TABLE_SCHEMAS: dict[str, dict[str, pl.DataType]] = {
    "trades": TRADES_SCHEMA,
    "book_delta_v2": DELTA_SCHEMA,
    "book": BOOK_SCHEMA,
}
# Kraken's names of assets whose common (Crypto Lake, cryptofeed) name differs.
ASSET_NAMES = {"XBT": "BTC", "XDG": "DOGE"}
# `prev_update_id` of a message whose checksum disagrees with the book: no message's number.
BROKEN_CHAIN = -1
# Quote currencies a file name's pair (`xbtusd`) is split by, longest first.
QUOTES = ("USDT", "USDC", "USD", "EUR", "GBP", "JPY", "CAD", "CHF", "AUD", "XBT", "BTC", "ETH", "DAI")


def lake_symbol(pair: str) -> str:
    """The lake's symbol of a Kraken pair, as Crypto Lake (cryptofeed's names) spells it: the
    assets joined by `-`, Kraken's XBT as BTC (XBT/USD and BTC/USD -> BTC-USD)."""
    base, _, quote = pair.upper().partition("/")
    if not base or not quote:
        raise ValueError(f"Kraken pair {pair!r} is not BASE/QUOTE")
    return f"{ASSET_NAMES.get(base, base)}-{ASSET_NAMES.get(quote, quote)}"


def file_pair(name_symbol: str) -> str | None:
    """The pair of a file name's symbol (`xbtusd` -> XBT/USD), None when no known quote ends it."""
    symbol = name_symbol.upper()
    quote = next((q for q in QUOTES if symbol.endswith(q) and len(symbol) > len(q)), None)
    return None if quote is None else f"{symbol.removesuffix(quote)}/{quote}"


class KrakenCaptureParser(ChunkedCaptureParser):
    """The Kraken capture files of ONE pair, in time order, parsed chunk by chunk; `book` is the
    book after the last line (where the next file's parser starts, `follow`)."""

    table_schemas = TABLE_SCHEMAS
    line_ordered = LINE_ORDERED

    def __init__(self, paths: Sequence[Path], chunk_lines: int | None = None) -> None:
        super().__init__(paths, chunk_lines)
        self.pair: str | None = None
        self.subscribed: int | None = None  # the depth of the subscription answer, when there is one
        self.book: KrakenBook | None = None
        self.checked = False  # the book agreed with every checksum since its snapshot
        self.last_seq: int | None = None  # the last book message's sequence_number

    def follow(self, previous: ChunkedCaptureParser) -> None:
        """Start from the book the pair's previous file ended with (its truncation needs it) and
        its checksums' verdict, and go on with its chain."""
        assert isinstance(previous, KrakenCaptureParser)
        self.book, self.checked, self.last_seq = previous.book, previous.checked, previous.last_seq

    def instrument(self) -> tuple[str, str, str]:
        """("spot", the lake's exchange, the lake's symbol) of the lines read."""
        if self.pair is None:
            raise CaptureFormatError(self.paths[0], None, "no Kraken book or trade message names a pair")
        return "spot", LAKE_EXCHANGE, lake_symbol(self.pair)

    def _pair(self, pair: str) -> None:
        self.one_instrument(pair)
        self.pair = pair

    def line(self, rows: TableRows, at: LineStamp, body: str) -> None:
        item = fmt.classify(fmt.decode(body))
        if isinstance(item, fmt.Subscribed):
            self._pair(item.symbol)
            self.subscribed = item.depth
        elif isinstance(item, fmt.Trades):
            self._pair(item.symbol)
            if item.snapshot:
                return  # trades of before the subscription, repeated by every resubscription
            for trade in fmt.trades(item):
                row = (trade.time_ns, at.recv_ns, trade.side, trade.price, trade.qty, trade.trade_id)
                rows.add("trades", row, at.line_number)
        elif isinstance(item, fmt.BookMessage):
            self._pair(item.symbol)
            self._book_message(rows, item, at)

    def _book_message(self, rows: TableRows, message: fmt.BookMessage, at: LineStamp) -> None:
        line_no, line_number, recv_ns = at.line_no, at.line_number, at.recv_ns
        if message.snapshot:
            self.book = KrakenBook(message, fmt.subscribed_depth(message, self.subscribed))
            self.checked = True
            dropped = self.book.dropped_on_load
        elif self.book is not None:
            dropped = self.book.apply(message)
        else:
            dropped = ([], [])  # no book yet to truncate: the levels as sent
        prev = BROKEN_CHAIN if self.last_seq is None else self.last_seq
        if self.checked and message.checksum is not None and self.book.checksum() != message.checksum:
            prev, self.checked = BROKEN_CHAIN, False  # the book is wrong from here to the next snapshot
        self.last_seq = recv_ns
        stamp = fmt.time_ns(message)
        origin = recv_ns if stamp is None else stamp
        flag = message.snapshot

        def add(is_bid: bool, price: str, size: str) -> None:
            row = (origin, recv_ns, recv_ns, is_bid, price, size, recv_ns, prev, line_no, flag)
            rows.add("book_delta_v2", row, line_number)

        for is_bid, levels in ((False, message.asks), (True, message.bids)):
            for price, size in levels:
                add(is_bid, price, size)
        for is_bid, prices in ((False, dropped[0]), (True, dropped[1])):
            for price in prices:
                add(is_bid, fixed_text(price, self.book.price_scale), "0")
        if message.snapshot:
            book = self.book
            bids, asks = (
                [(fixed_text(p, book.price_scale), fixed_text(q, book.qty_scale)) for p, q in side.top(BOOK_LEVELS)]
                for side in (book.bid_side, book.ask_side)
            )
            rows.add("book", (origin, recv_ns, recv_ns, *top_levels(bids), *top_levels(asks)), line_number)

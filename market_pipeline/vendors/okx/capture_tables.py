"""OKX v5 captures -> the lake's tables, chunk by chunk (`PIPELINE_SOURCE`/reference `okx_capture`).

The lines of one instrument's capture files (`capture_format`) become, `CHUNK_LINES` lines at a
time (memory is set by the chunk, never by a file):

- `book_delta_v2`: a row per level of every `books`-channel message (bids, then asks, in the
  message's order; size 0 removes the level), `sequence_number` = OKX's `seqId`,
  `prev_update_id` = its `prevSeqId` (null on a snapshot, whose -1 names no message),
  `first_update_id` = the `seqId` (an OKX message is one id, not Binance's U..u range),
  `origin_time` = OKX's `ts` (ms) in ns, `received_time` = the line's receive time, `is_snapshot`
  on the rows of a snapshot (the generic replay clears the book before them: a reconnect's
  snapshot resyncs it), `line_no` the line in the files. A keepalive update (no levels) has no row;
- `book`: the best `BOOK_LEVELS` a side of every snapshot, `sequence_number` its `seqId`;
- `book_ticker`: every `bbo-tbt` message, `update_id` its `seqId` (the book state it shows),
  `origin_time` its `ts`; a quote with an empty side (a side of the book empty) has no row;
- `trades`: every trade of `trades`/`trades-all`, `trade_id` OKX's `tradeId`, `side` the taker's.

Prices and sizes are OKX's decimal strings read as float64 (correctly rounded, as Binance's
capture tables are); every number is checked: a line that is not a number where one is due, or a
message of another instrument, raises `CaptureFormatError` naming the file and line.
"""

from __future__ import annotations

from typing import Any

from market_pipeline.vendors.capture_files import CaptureFormatError, decode_json
from market_pipeline.vendors.capture_tables import TABLE_SCHEMAS, ChunkedCaptureParser, TableRows, top_levels
from market_pipeline.vendors.okx import capture_format as fmt

NS_PER_MS = 1_000_000
LAKE_EXCHANGE = "OKX"
LINE_ORDERED = ("book_delta_v2", "book_ticker")


def lake_symbol(inst_id: str) -> str:
    """The lake's symbol of an OKX instrument id, as Crypto Lake (cryptofeed's names) spells it:
    a perpetual swap's `-SWAP` becomes `-PERP` (BTC-USDT-SWAP -> BTC-USDT-PERP); spot pairs and
    dated futures keep OKX's id (BTC-USDT, BTC-USD-251226)."""
    inst_id = inst_id.upper()
    return inst_id.removesuffix("-SWAP") + "-PERP" if inst_id.endswith("-SWAP") else inst_id


class OkxCaptureParser(ChunkedCaptureParser):
    """The OKX capture files of ONE instrument, in time order, parsed chunk by chunk.

    `chunks()` yields each chunk's tables (`TABLE_SCHEMAS`, `line_no` running across the files);
    `instrument()` then tells the market and the lake's exchange and symbol."""

    inst_id: str | None = None
    table_schemas = TABLE_SCHEMAS

    def instrument(self) -> tuple[str, str, str]:
        """(OKX market, the lake's exchange, the lake's symbol) of the lines read."""
        if self.inst_id is None:
            raise CaptureFormatError(self.paths[0], None, "no OKX message names an instrument (arg.instId)")
        return fmt.market_of(self.inst_id), LAKE_EXCHANGE, lake_symbol(self.inst_id)

    def line(self, rows: TableRows, line_no: int, line_number: int, recv_ns: int, body: str) -> None:
        if body.strip() == "pong":  # the answer to the recorder's keepalive "ping", not JSON
            return
        message = decode_json(body)
        item = fmt.classify(message)
        if item is None:
            return
        if self.inst_id is None:
            self.inst_id = item.inst_id
        elif item.inst_id != self.inst_id:
            raise ValueError(f"message of {item.inst_id} in a capture of {self.inst_id}: one instrument a file")
        if isinstance(item, fmt.Trades):
            for trade in message["data"]:
                row = (_ns(trade, "ts"), recv_ns, _side(trade), _text(trade, "px"), _text(trade, "sz"))
                rows.add("trades", (*row, _text(trade, "tradeId")), line_number)
            return
        origin = _ns(message["data"][0], "ts")
        if isinstance(item, fmt.TopMessage):
            quote = item.quote
            if quote.bids and quote.asks:
                (bid, bid_size), (ask, ask_size) = quote.bids[0], quote.asks[0]
                row = (origin, recv_ns, quote.seq, bid, bid_size, ask, ask_size, line_no)
                rows.add("book_ticker", row, line_number)
            return
        prev = None if item.snapshot else item.prev_seq_id
        for is_bid, levels in ((True, item.bids), (False, item.asks)):
            for price, size in levels:
                row = (origin, recv_ns, item.seq_id, is_bid, price, size, item.seq_id, prev, line_no, item.snapshot)
                rows.add("book_delta_v2", row, line_number)
        if item.snapshot:
            rows.add(
                "book", (origin, recv_ns, item.seq_id, *top_levels(item.bids), *top_levels(item.asks)), line_number
            )


def _text(entry: dict[str, Any], key: str) -> str:
    value = entry.get(key)
    if not isinstance(value, str):
        raise ValueError(f"trade {key} {value!r} is not a string")
    return value


def _side(trade: dict[str, Any]) -> str:
    side = trade.get("side")
    if side not in ("buy", "sell"):
        raise ValueError(f"trade side {side!r} is not buy|sell")
    return side


def _ns(entry: dict[str, Any], key: str) -> int:
    """OKX's ms timestamp (a string of digits) in ns."""
    value = entry.get(key)
    if not isinstance(value, str) or not value.isdigit():
        raise ValueError(f"{key} {value!r} is not a timestamp in ms")
    return int(value) * NS_PER_MS

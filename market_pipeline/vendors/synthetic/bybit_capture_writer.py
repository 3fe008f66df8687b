"""A generated synthetic day written as a Bybit v5 capture (`capture --exchange bybit`'s format,
docs/capture.md#bybit-captures), with exact ground truth: the reference of a Bybit vendor day in
`source_agreement`, and a day for `verify-capture` and the `bybit_capture` source.

The day's walk is `capture_writer`'s (`write_capture_day(..., renderer=BybitLines)`); the lines are Bybit's:
- the day's first message (the whole book at midnight) as the `orderbook.1000` snapshot (each
  side best first), every later message as a delta. `seq` (the matching engine's cross
  sequence, what the lake keeps as `sequence_number`) is the message's update id, the vendor's
  sequence number; the topic's `u` is the update id + `TOPIC_U_OFFSET`, one more a message as
  Bybit's, so a message missing from the day breaks Bybit's chain;
- one `orderbook.1` snapshot per ground-truth row (the true best bid and ask, `seq` the book's);
- every trade as a `publicTrade` line (`S` the taker's side, `i` the synthetic id; no `L`).
A Bybit service restart (`restarts`: update ids after the first) sends its message as a snapshot
of the whole book after it with `u` = 1, the topic's later messages counting on from 2 (`seq`
goes on): the `u` = 1 fault of verify-capture and of the capture source's replay.
`ts` (and `cts`, `T`) is the exchange time in ms; levels are `[price, size]` with exact decimal
texts on the instrument's grid. The topic's depth is 1000, more than the synthetic book's levels
a side, so no level leaves the topic's view (the replay's truncation changes nothing).
"""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path

import polars as pl

from market_pipeline.core.instruments import Instrument
from market_pipeline.vendors.synthetic.capture_writer import NS_PER_MS, BinanceLines, book_after
from market_pipeline.vendors.synthetic.day_files import check_on_grid, decimal_text

BOOK_DEPTH = 1000
TOPIC_U_OFFSET = 10_000_000  # the topic's u counts on from another number than seq


def bybit_names(instrument: Instrument) -> tuple[str, str]:
    """(Bybit category, Bybit symbol) of a Bybit instrument: BYBIT:BTC-USDT -> (spot, BTCUSDT),
    BYBIT:BTC-USDT-PERP -> (linear, BTCUSDT), BYBIT:BTC-USD-PERP -> (inverse, BTCUSD)."""
    parts = instrument.symbol.upper().split("-")
    if instrument.exchange != "BYBIT" or len(parts) not in (2, 3) or (len(parts) == 3 and parts[2] != "PERP"):
        raise ValueError(f"{instrument.key}: a Bybit capture is written for Bybit spot pairs and perpetuals only")
    symbol = parts[0] + parts[1]
    if len(parts) == 2:
        return "spot", symbol
    return ("inverse" if parts[1] == "USD" else "linear"), symbol


class BybitLines(BinanceLines):
    """The text of Bybit's lines (`orderbook.1000`, `orderbook.1`, `publicTrade`) over the same frames."""

    snapshot_replaces_opening = True

    def __init__(self, instrument: Instrument, where: Path, restarts: Collection[int] = ()) -> None:
        category, self.symbol = bybit_names(instrument)
        self.where = where
        self.tick, self.lot = instrument.tick_size, instrument.lot_size
        self.file_prefix = f"bybit_{category}_{self.symbol.lower()}"
        self.restarts = sorted(restarts)
        self.book: pl.DataFrame | None = None  # the book before the next batch, kept for the restarts

    def _topic_u(self, u: pl.Expr) -> pl.Expr:
        """The topic's `u` of the message with update id `u`: consecutive, from 1 after a restart."""
        topic_u = u + TOPIC_U_OFFSET
        for restart in self.restarts:  # the latest restart before a message counts
            topic_u = pl.when(u >= restart).then(u - restart + 1).otherwise(topic_u)
        return topic_u

    def snapshot_id(self, first_u: int) -> int:
        return first_u  # the snapshot is the opening message

    def _head(self, depth: int, kind: str, origin_ms: pl.Expr) -> list[pl.Expr]:
        """`{"topic":..,"type":..,"ts":..,"data":{"s":..,` of an orderbook message."""
        topic = f'{{"topic":"orderbook.{depth}.{self.symbol}","type":"{kind}","ts":'
        return [pl.lit(topic), origin_ms, pl.lit(f',"data":{{"s":"{self.symbol}",')]

    def _tail(self, u: pl.Expr, origin_ms: pl.Expr) -> list[pl.Expr]:
        """`"u":..,"seq":..},"cts":..}` of an orderbook message whose update id is `u`."""
        topic_u = self._topic_u(u).cast(pl.String)
        seq = u.cast(pl.String)
        return [pl.lit(',"u":'), topic_u, pl.lit(',"seq":'), seq, pl.lit('},"cts":'), origin_ms, pl.lit("}")]

    def diffs(self, rows: pl.DataFrame) -> pl.DataFrame:
        """One `orderbook.1000` delta line per message: u, recv, origin_ms, text."""
        messages = self.messages(rows)
        origin_ms = pl.col("origin_ms").cast(pl.String)
        text = pl.concat_str(
            [
                *self._head(BOOK_DEPTH, "delta", origin_ms),
                pl.lit('"b":['),
                pl.col("b").fill_null(""),
                pl.lit('],"a":['),
                pl.col("a").fill_null(""),
                pl.lit("]"),
                *self._tail(pl.col("u"), origin_ms),
            ]
        )
        messages = messages.with_columns(text=text)
        if not self.restarts:
            return messages
        if self.book is None:
            self.book = rows.select("side_is_bid", "price", "size").clear()
        batch_ids = set(messages["u"])
        for restart in (r for r in self.restarts if r in batch_ids):
            origin_ms = int(messages.filter(pl.col("u") == restart)["origin_ms"][0])
            snapshot = self._snapshot(book_after(self.book, rows.filter(pl.col("u") <= restart)), 1, restart, origin_ms)
            messages = messages.with_columns(
                text=pl.when(pl.col("u") == restart).then(pl.lit(snapshot)).otherwise(pl.col("text"))
            )
        self.book = book_after(self.book, rows)
        return messages

    def snapshot(self, opening: pl.DataFrame, last_update_id: int, origin_ms: int) -> str:
        """The `orderbook.1000` snapshot of the opening message's levels, each side best first."""
        return self._snapshot(opening, last_update_id + TOPIC_U_OFFSET, last_update_id, origin_ms)

    def _snapshot(self, levels: pl.DataFrame, topic_u: int, seq: int, origin_ms: int) -> str:
        """An `orderbook.1000` snapshot of `levels` (side_is_bid, price, size), each side best first."""
        bids, asks = self.book_sides(levels)
        return (
            f'{{"topic":"orderbook.{BOOK_DEPTH}.{self.symbol}","type":"snapshot","ts":{origin_ms},'
            f'"data":{{"s":"{self.symbol}","b":[{bids}],"a":[{asks}],"u":{topic_u},'
            f'"seq":{seq}}},"cts":{origin_ms}}}'
        )

    def tickers(self, truth: pl.DataFrame) -> pl.DataFrame:
        """One `orderbook.1` snapshot line per truth row (joined to its message: u, recv, origin_ms)."""
        texts = self.top_texts(truth)
        origin_ms = pl.col("origin_ms").cast(pl.String)
        text = pl.concat_str(
            [
                *self._head(1, "snapshot", origin_ms),
                pl.lit('"b":[["'),
                texts["bid_0_price"],
                pl.lit('","'),
                texts["bid_0_size"],
                pl.lit('"]],"a":[["'),
                texts["ask_0_price"],
                pl.lit('","'),
                texts["ask_0_size"],
                pl.lit('"]]'),
                *self._tail(pl.col("u"), origin_ms),
            ]
        )
        return truth.select("u", "recv", text=text)

    def trades(self, trades: pl.DataFrame) -> pl.DataFrame:
        """One `publicTrade` line per trade: recv, text."""
        price, price_off = decimal_text("price", self.tick, self.where)
        quantity, quantity_off = decimal_text("quantity", self.lot, self.where)
        check_on_grid(trades, {"price": price_off, "quantity": quantity_off}, self.where)
        origin_ms = (pl.col("origin_time") // NS_PER_MS).cast(pl.String)
        side = pl.when(pl.col("side") == "sell").then(pl.lit("Sell")).otherwise(pl.lit("Buy"))
        text = pl.concat_str(
            [
                pl.lit(f'{{"topic":"publicTrade.{self.symbol}","type":"snapshot","ts":'),
                origin_ms,
                pl.lit(',"data":[{"T":'),
                origin_ms,
                pl.lit(f',"s":"{self.symbol}","S":"'),
                side,
                pl.lit('","v":"'),
                quantity,
                pl.lit('","p":"'),
                price,
                pl.lit('","i":"'),
                pl.col("trade_id"),
                pl.lit('","BT":false}]}'),
            ]
        )
        return trades.select(recv=pl.col("received_time"), text=text)

"""A generated synthetic day written as a raw Binance capture, exactly as `market-pipeline capture`
writes one (docs/capture.md), so the capture source and `verify-capture` can be tested against
the ground truth and benchmarked on a realistic day.

One gzip file per day, ``binance_{spot|usdm}_{symbol}_{YYYYMMDD}.gz``, lines
``<receive ns> <JSON>`` in receive-time order:
- every synthetic message as a combined-stream depth diff (``@depth@0ms``), ``U == u ==`` the
  update id of the message (its sequence number, shifted so that a day written after another
  continues that day's ids), on futures ``pu = u - 1``: the exchange's previous update, so a
  message missing from the day breaks the chain as on Binance;
- right after the day's first message (the whole book at midnight), the REST depth snapshot of
  that book (futures ones with E and T). Its ``lastUpdateId`` is the opening diff's ``u`` on
  futures and ``u - 1`` on spot: by either market's rule the opening diff is then the first one
  applied (it sets the levels the snapshot already holds: quantities are absolute), so the
  tickers of the opening message are checked too;
- after each message the synthetic vendor took a snapshot after, one ``@bookTicker`` line per
  ground-truth row with the true best bid and ask (futures ones with E and T); or, asked for
  (`every_top`), after every message that changed the true best bid or ask, price or quantity,
  as Binance's stream sends them: a line a change of the top, tens of millions on a busy day;
- every trade as an ``@trade`` line, ``m`` (buyer is maker) true when the taker sold.
Prices and quantities are exact decimal strings on the instrument's tick and lot.

A day written after another (`previous`) opens with a diff that also removes (quantity 0) the
previous day's final levels the new day's book does not have: synthetic days are generated
independently, and a replay of the two files as one capture stays in sync across midnight.

Memory is set by the batch size (`day_files`): the day is read and written batch by batch.

The lines' text is the renderer's (`BinanceLines` here; `okx_capture_writer.OkxLines` and
`bybit_capture_writer.BybitLines`, `kraken_capture_writer.KrakenLines` render the same day as an
OKX, a Bybit or a Kraken capture): the day's walk through its messages, snapshot, tickers and
trades is one for every exchange. A renderer leaves a message's text null where the exchange
sends nothing for it (Kraken: a change outside the subscribed depth) and renders no tickers where
it has no top-of-book stream.
"""

from __future__ import annotations

import datetime as dt
import gzip
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import polars as pl

from market_pipeline.core.instruments import Instrument
from market_pipeline.core.lake.files import atomic_path
from market_pipeline.vendors.binance.capture_format import LAKE_EXCHANGES, lake_instrument
from market_pipeline.vendors.synthetic.day_files import (
    RowsThrough,
    check_on_grid,
    day_files,
    decimal_text,
    message_batches,
)

MARKET_OF_EXCHANGE = {exchange: market for market, exchange in LAKE_EXCHANGES.items() if market != "coinm"}
NS_PER_MS = 1_000_000
TICKER_COLUMNS = ["sequence_number", "bid_0_price", "bid_0_size", "ask_0_price", "ask_0_size"]
DELTA_COLUMNS = ["origin_time", "received_time", "sequence_number", "side_is_bid", "price", "size"]
# Ordering of lines with the same receive time and update id.
_DIFF, _SNAPSHOT, _TICKER = 0, 1, 2
_LEVELS = {"side_is_bid": pl.Boolean(), "price": pl.Float64(), "size": pl.Float64()}


@dataclass(frozen=True)
class CaptureEnd:
    """Where a written day stopped: the next day continues its update ids and replaces its book."""

    last_update_id: int
    book: pl.DataFrame  # side_is_bid, price, size of every level at the end of the day


@dataclass(frozen=True)
class CaptureDay:
    path: Path
    truth_book_path: Path
    first_update_id: int
    update_id_offset: int  # update id = synthetic sequence number + this
    diffs: int
    tickers: int
    trades: int
    end: CaptureEnd


def binance_names(instrument: Instrument) -> tuple[str, str]:
    """(market, Binance symbol) of a BINANCE or BINANCE_FUTURES instrument: BTC-USDT-PERP -> BTCUSDT."""
    market = MARKET_OF_EXCHANGE.get(instrument.exchange)
    if market is None:
        raise ValueError(f"{instrument.key}: a capture is written for {' or '.join(MARKET_OF_EXCHANGE)} only")
    symbol = instrument.symbol.upper().removesuffix("-PERP").replace("-", "")
    if lake_instrument(market, symbol) != (instrument.exchange, instrument.symbol):
        raise ValueError(f"{instrument.key}: no Binance symbol names it ({symbol} reads back differently)")
    return market, symbol


def capture_file_name(instrument: Instrument, day: dt.date) -> str:
    market, symbol = binance_names(instrument)
    return f"binance_{market}_{symbol.lower()}_{day:%Y%m%d}.gz"  # BinanceLines.file_prefix and the day


# The columns `BinanceLines.with_texts` adds: a level's price and size as sent.
LEVEL_TEXTS = ("price_text", "size_text")


class BinanceLines:
    """The JSON text of each kind of line, as polars expressions over a frame's columns."""

    # The opening message is written as a diff, and the snapshot beside it (Binance's REST
    # snapshot); an exchange whose snapshot is a message of the stream writes it instead.
    snapshot_replaces_opening = False
    level_tail = ""  # what follows price and size in a level's array

    def __init__(self, instrument: Instrument, where: Path) -> None:
        market, self.symbol = binance_names(instrument)
        self.futures = market != "spot"
        self.stream = self.symbol.lower()
        self.where = where
        self.tick, self.lot = instrument.tick_size, instrument.lot_size
        self.file_prefix = f"binance_{market}_{self.symbol.lower()}"

    def snapshot_id(self, first_u: int) -> int:
        """The snapshot's update id: by either Binance market's rule the opening diff is the first applied."""
        return first_u if self.futures else first_u - 1

    def _times(self, origin_ms: pl.Expr) -> list[pl.Expr]:
        """`"E":..,"T":..` of futures messages (spot ones carry only E)."""
        if self.futures:
            return [pl.lit('"E":'), origin_ms, pl.lit(',"T":'), origin_ms, pl.lit(",")]
        return [pl.lit('"E":'), origin_ms, pl.lit(",")]

    def grid_texts(self, frame: pl.DataFrame, price: str, size: str) -> tuple[pl.Expr, pl.Expr]:
        """The exact texts of a price column (on the tick) and a size column (on the lot); ValueError
        naming the file, column and value when one is off its grid."""
        price_text, price_off = decimal_text(price, self.tick, self.where)
        size_text, size_off = decimal_text(size, self.lot, self.where)
        check_on_grid(frame, {price: price_off, size: size_off}, self.where)
        return price_text, size_text

    def with_texts(self, rows: pl.DataFrame) -> pl.DataFrame:
        """Delta (or snapshot) rows with the exact texts of their price and size (`LEVEL_TEXTS`),
        for a renderer that walks the levels one by one (a book it keeps)."""
        price, size = self.grid_texts(rows, "price", "size")
        return rows.with_columns(price_text=price, size_text=size)

    def levels(self, rows: pl.DataFrame) -> pl.DataFrame:
        """Delta (or snapshot) rows with their `["price","qty"]` text as `level`."""
        price, size = self.grid_texts(rows, "price", "size")
        level = [pl.lit('["'), price, pl.lit('","'), size, pl.lit(f'"{self.level_tail}]')]
        return rows.with_columns(level=pl.concat_str(level))

    def messages(self, rows: pl.DataFrame) -> pl.DataFrame:
        """One row per message: u, recv, origin_ms, and its bid and ask levels as text (b, a)."""
        return (
            self.levels(rows)
            .group_by("u", maintain_order=True)
            .agg(
                pl.col("received_time").first().alias("recv"),
                (pl.col("origin_time").first() // NS_PER_MS).alias("origin_ms"),
                pl.col("level").filter(pl.col("side_is_bid")).str.join(",").alias("b"),
                pl.col("level").filter(~pl.col("side_is_bid")).str.join(",").alias("a"),
            )
        )

    def diffs(self, rows: pl.DataFrame) -> pl.DataFrame:
        """One line per message: u, recv, origin_ms, text."""
        messages = self.messages(rows)
        u = pl.col("u").cast(pl.String)
        chain = [pl.lit(',"pu":'), (pl.col("u") - 1).cast(pl.String)] if self.futures else []
        text = pl.concat_str(
            [
                pl.lit(f'{{"stream":"{self.stream}@depth@0ms","data":{{"e":"depthUpdate",'),
                *self._times(pl.col("origin_ms").cast(pl.String)),
                pl.lit(f'"s":"{self.symbol}","U":'),
                u,
                pl.lit(',"u":'),
                u,
                *chain,
                pl.lit(',"b":['),
                pl.col("b").fill_null(""),
                pl.lit('],"a":['),
                pl.col("a").fill_null(""),
                pl.lit("]}}"),
            ]
        )
        return messages.with_columns(text=text)

    def book_sides(self, book: pl.DataFrame) -> tuple[str, str]:
        """The levels of `book` (side_is_bid, price, size: the opening message's) as a snapshot
        holds them: (bids, asks) texts, each side best first, levels joined by commas."""
        levels = self.levels(book.filter(pl.col("size") > 0))
        bids = levels.filter(pl.col("side_is_bid")).sort("price", descending=True)["level"].str.join(",").item()
        asks = levels.filter(~pl.col("side_is_bid")).sort("price")["level"].str.join(",").item()
        return bids or "", asks or ""

    def snapshot(self, opening: pl.DataFrame, last_update_id: int, origin_ms: int) -> str:
        """The REST depth snapshot of the opening message's levels, each side best first."""
        bids, asks = self.book_sides(opening)
        times = f'"E":{origin_ms},"T":{origin_ms},' if self.futures else ""
        return f'{{"lastUpdateId":{last_update_id},{times}"bids":[{bids}],"asks":[{asks}]}}'

    def top_texts(self, truth: pl.DataFrame) -> dict[str, pl.Expr]:
        """The exact decimal texts of the truth rows' best bid and ask (`TICKER_COLUMNS` but the
        sequence number, by column), checked on the grid and on both sides being there."""
        texts, checks = {}, {}
        for column in TICKER_COLUMNS[1:]:
            step = self.tick if column.endswith("price") else self.lot
            texts[column], checks[column] = decimal_text(column, step, self.where)
        check_on_grid(truth, checks, self.where)
        empty = truth.filter(pl.any_horizontal(pl.col(*TICKER_COLUMNS[1:]).is_null()))
        if empty.height:
            raise ValueError(f"{self.where}: the true book after update {empty['u'][0]} has an empty side")
        return texts

    def tickers(self, truth: pl.DataFrame) -> pl.DataFrame:
        """One bookTicker line per truth row (joined to its message: u, recv, origin_ms)."""
        names = {"b": "bid_0_price", "B": "bid_0_size", "a": "ask_0_price", "A": "ask_0_size"}
        top = self.top_texts(truth)
        texts = {key: top[column] for key, column in names.items()}
        head = [pl.lit('"e":"bookTicker",'), *self._times(pl.col("origin_ms").cast(pl.String))] if self.futures else []
        fields = [part for key in names for part in (pl.lit(f',"{key}":"'), texts[key], pl.lit('"'))]
        text = pl.concat_str(
            [
                pl.lit(f'{{"stream":"{self.stream}@bookTicker","data":{{'),
                *head,
                pl.lit('"u":'),
                pl.col("u").cast(pl.String),
                pl.lit(f',"s":"{self.symbol}"'),
                *fields,
                pl.lit("}}"),
            ]
        )
        return truth.select("u", "recv", text=text)

    def trade_texts(self, trades: pl.DataFrame, numeric_ids_of: str | None = None) -> tuple[pl.Expr, pl.Expr]:
        """The exact texts of the trades' price and quantity, checked on the grid; and, where the
        exchange's trade ids are numbers (`numeric_ids_of` names it), the ids checked to be."""
        price, quantity = self.grid_texts(trades, "price", "quantity")
        not_numeric = trades.filter(~pl.col("trade_id").str.contains(r"^[0-9]+$"))
        if numeric_ids_of is not None and not_numeric.height:
            raise ValueError(
                f"{self.where}: trade id {not_numeric['trade_id'][0]!r} is not a {numeric_ids_of} trade id"
            )
        return price, quantity

    def trades(self, trades: pl.DataFrame) -> pl.DataFrame:
        """One @trade line per trade: recv, text."""
        price, quantity = self.trade_texts(trades, "Binance")
        origin_ms = (pl.col("origin_time") // NS_PER_MS).cast(pl.String)
        maker = pl.when(pl.col("side") == "sell").then(pl.lit("true")).otherwise(pl.lit("false"))
        text = pl.concat_str(
            [
                pl.lit(f'{{"stream":"{self.stream}@trade","data":{{"e":"trade","E":'),
                origin_ms,
                pl.lit(f',"s":"{self.symbol}","t":'),
                pl.col("trade_id"),
                pl.lit(',"p":"'),
                price,
                pl.lit('","q":"'),
                quantity,
                pl.lit('","T":'),
                origin_ms,
                pl.lit(',"m":'),
                maker,
                pl.lit(',"M":true}}' if not self.futures else "}}"),
            ]
        )
        return trades.select(recv=pl.col("received_time"), text=text)


def _opening_rows(batch: pl.DataFrame, previous: CaptureEnd | None) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(the day's first message, the first batch with the previous day's leftover levels removed
    by that message)."""
    first_u = batch["u"][0]
    opening = batch.filter(pl.col("u") == first_u)
    if previous is None or previous.book.is_empty():
        return opening, batch
    stamp = opening.select("origin_time", "received_time", "sequence_number", "u").row(0, named=True)
    gone = previous.book.join(opening.select("side_is_bid", "price"), on=["side_is_bid", "price"], how="anti")
    removals = gone.select(
        *(pl.lit(value, dtype=batch.schema[name]).alias(name) for name, value in stamp.items()),
        "side_is_bid",
        "price",
        size=pl.lit(0.0),
    ).select(batch.columns)
    rest = batch.slice(opening.height)
    return opening, pl.concat([opening, removals, rest])


def _changed_tops(tops: pl.DataFrame, before: pl.DataFrame | None) -> pl.DataFrame:
    """The tops that differ from the one before them (`before`: the last top of the batch before,
    None at the day's first): a bookTicker is sent when the best price or quantity changes."""
    joined = tops if before is None else pl.concat([before, tops])
    changed = pl.any_horizontal(pl.col(c).ne_missing(pl.col(c).shift(1)) for c in TICKER_COLUMNS[1:])
    flagged = joined.with_columns(changed=changed).slice(0 if before is None else 1)
    return flagged.filter("changed").drop("changed")


def book_after(book: pl.DataFrame, batch: pl.DataFrame) -> pl.DataFrame:
    """The book after `batch`: each level's last quantity (levels at 0 dropped at the end of the day)."""
    latest = batch.select(*_LEVELS).group_by("side_is_bid", "price").agg(pl.col("size").last())
    return pl.concat([book, latest]).group_by("side_is_bid", "price").agg(pl.col("size").last())


def _write(out: IO[bytes], texts: Iterable[str]) -> None:
    for text in texts:
        out.write(text.encode())


def write_capture_day(
    root: Path,
    instrument: Instrument,
    day: dt.date,
    out_dir: Path,
    previous: CaptureEnd | None = None,
    renderer: Callable[[Instrument, Path], BinanceLines] = BinanceLines,
    dropped: Collection[int] = (),
    every_top: bool = False,
) -> CaptureDay:
    """Render the synthetic day `generate_day` wrote under `root` as a capture in `out_dir`
    (Binance's, or the exchange's of `renderer`: a `BinanceLines` class, or a callable making one
    with its faults, e.g. `functools.partial(BybitLines, restarts=[...])`). `dropped`: update ids
    whose diff lines are left out (a capture that lost messages; their tickers stay). `every_top`:
    a ticker at every change of the true top, not at the vendor's snapshots."""
    files = day_files(root, instrument, day)
    lines = renderer(instrument, files.deltas)
    truth = RowsThrough(files.tops if every_top else files.truth, "sequence_number", TICKER_COLUMNS)
    last_top: pl.DataFrame | None = None  # `every_top`: the top after the previous batch's last message
    trades = RowsThrough(files.trades, "received_time")
    target = out_dir / f"{lines.file_prefix}_{day:%Y%m%d}.gz"
    target.parent.mkdir(parents=True, exist_ok=True)
    book = pl.DataFrame(schema=_LEVELS)
    offset = first_u = last_u = None
    last_stamp: pl.DataFrame | None = None  # the previous batch's last message, for the tickers after it
    last_recv = 0
    counts = {"diffs": 0, "tickers": 0, "trades": 0}
    with atomic_path(target) as tmp, gzip.open(tmp, "wb", compresslevel=1) as out:
        batches = message_batches(files.deltas, DELTA_COLUMNS)
        batch = next(batches, None)
        while batch is not None:
            following = next(batches, None)
            if offset is None:
                first_seq = int(batch["sequence_number"][0])
                offset = (previous.last_update_id + 1 if previous else first_seq) - first_seq
            batch = batch.with_columns(u=pl.col("sequence_number") + offset)
            opening = None
            if first_u is None:
                first_u = int(batch["u"][0])
                opening, batch = _opening_rows(batch, previous)
            book = book_after(book, batch)
            diffs = lines.diffs(batch)
            recv = diffs["recv"]
            if recv[0] < last_recv or not recv.is_sorted():
                raise ValueError(f"{files.deltas}: receive times go back near update {diffs['u'][0]}")
            last_recv = recv[-1]
            written = diffs
            if opening is not None and lines.snapshot_replaces_opening:
                written = diffs.filter(pl.col("u") != first_u)
            written = written.filter(pl.col("text").is_not_null())  # a message the exchange does not send
            if dropped:
                written = written.filter(~pl.col("u").is_in(list(dropped)))
            counts["diffs"] += written.height
            message_lines = [written.select("u", "recv", "text", rank=pl.lit(_DIFF))]
            if opening is not None:
                text = lines.snapshot(opening, lines.snapshot_id(first_u), int(diffs["origin_ms"][0]))
                message_lines.append(pl.DataFrame({"u": [first_u], "recv": [recv[0]], "text": [text]}))
                message_lines[-1] = message_lines[-1].with_columns(rank=pl.lit(_SNAPSHOT))
            stamps = diffs.select("u", "recv", "origin_ms")
            if last_stamp is not None:
                stamps = pl.concat([last_stamp, stamps])
            last_stamp = stamps.tail(1)
            shown = truth.through(None if following is None else int(batch["sequence_number"][-1]))
            if every_top and shown is not None and shown.height:
                shown, last_top = _changed_tops(shown, last_top), shown.tail(1)
            if shown is not None and shown.height:
                shown = shown.with_columns(u=pl.col("sequence_number") + offset).join_asof(
                    stamps, on="u", strategy="backward"
                )
                if shown["recv"].null_count():
                    raise ValueError(f"{files.truth}: a true book before the day's first message")
                quotes = lines.tickers(shown)  # none where the exchange has no top-of-book stream
                counts["tickers"] += quotes.height
                message_lines.append(quotes.with_columns(rank=pl.lit(_TICKER)))
            ordered = (
                pl.concat(message_lines, how="diagonal_relaxed")
                .sort("u", "rank", maintain_order=True)
                .with_row_index("order")
            )
            traded = trades.through(None if following is None else int(last_recv))
            if traded is not None and traded.height:
                counts["trades"] += traded.height
                # Trades go before the messages received at the same time (order -1), in their own order.
                ordered = pl.concat(
                    [ordered.select("recv", "order", "text"), lines.trades(traded).with_columns(order=pl.lit(-1))],
                    how="diagonal_relaxed",
                ).sort("recv", "order", maintain_order=True)
            body = pl.concat_str([pl.col("recv").cast(pl.String), pl.lit(" "), pl.col("text"), pl.lit("\n")])
            _write(out, ordered.select(body.str.join("")).to_series())
            last_u = int(diffs["u"][-1])
            batch = following
    if first_u is None or last_u is None or offset is None:
        raise ValueError(f"{files.deltas}: no delta messages")
    return CaptureDay(
        path=target,
        truth_book_path=files.truth,
        first_update_id=first_u,
        update_id_offset=offset,
        end=CaptureEnd(last_u, book.filter(pl.col("size") > 0)),
        **counts,
    )


def write_capture_days(
    root: Path, instrument: Instrument, days: list[dt.date], out_dir: Path, renderer: type[BinanceLines] = BinanceLines
) -> list[CaptureDay]:
    """Consecutive synthetic days as one capture: each day's update ids continue the day before."""
    written: list[CaptureDay] = []
    for day in days:
        end = written[-1].end if written else None
        written.append(write_capture_day(root, instrument, day, out_dir, end, renderer))
    return written

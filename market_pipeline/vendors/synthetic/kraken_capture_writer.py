"""A generated synthetic day written as a Kraken spot capture (`capture --exchange kraken`'s format:
WebSocket v2, docs/capture.md#kraken-spot-captures), with exact ground truth: the reference of a
Kraken vendor day in `source_agreement`, and a day for `verify-capture` and the `kraken_capture`
source.

The day's walk is `capture_writer`'s (`write_capture_day(..., renderer=KrakenLines)`); the lines
are what a subscriber to Kraken's `book` channel at depth `DEPTH` receives:
- the day's first message (the whole book at midnight) as the `book` snapshot of the best
  `DEPTH` levels a side;
- every later message as the `book` update of what it changed in the subscriber's view (the best
  `DEPTH` levels a side, kept by the writer from the whole synthetic book): a level that left the
  view because it was removed is sent with quantity 0, a level that changed or came into view
  (also one coming back after a removal above it: Kraken's republished level) with its quantity,
  and nothing for a level pushed out of the view by an insert (Kraken's truncation rule). A
  message that changes nothing in the view is not sent;
- Kraken's CRC32 checksum of the view's top 10 levels on the snapshot and every update, computed
  from the texts sent (asks low to high, then bids high to low, `.` removed, leading zeros
  stripped), so a message missing from the capture shows at the next checksum it changes;
- every trade as a `trade` line (`side` the taker's, `trade_id` the synthetic id).
Prices and quantities are exact decimal texts on the instrument's grid (JSON numbers, trailing
zeros kept, as Kraken's v2 sends them "with full precision"); `timestamp` is the exchange time in
µs. There is no top-of-book stream.
"""

from __future__ import annotations

import datetime as dt
import zlib
from decimal import Decimal
from pathlib import Path

import polars as pl

from market_pipeline.core.instruments import Instrument
from market_pipeline.vendors.exchange_books import BookSide
from market_pipeline.vendors.kraken.book import CHECKSUM_LEVELS
from market_pipeline.vendors.kraken.capture_format import BOOK_DEPTHS
from market_pipeline.vendors.synthetic.capture_writer import LEVEL_TEXTS, NS_PER_MS, BinanceLines

DEPTH = BOOK_DEPTHS[0]  # Kraken's smallest subscription, the recorder's default (10)


def kraken_pair(instrument: Instrument) -> str:
    """Kraken's v2 pair of a KRAKEN spot instrument: KRAKEN:BTC-USD -> BTC/USD."""
    parts = instrument.symbol.upper().split("-")
    if instrument.exchange != "KRAKEN" or len(parts) != 2:
        raise ValueError(f"{instrument.key}: a Kraken capture is written for Kraken spot pairs only")
    return "/".join(parts)


def _checksum_text(text: str) -> str:
    return text.replace(".", "").lstrip("0")


def _iso(ns: int) -> str:
    """Kraken's RFC 3339 time, µs resolution."""
    return f"{dt.datetime.fromtimestamp(ns // 1_000_000_000, dt.UTC):%Y-%m-%dT%H:%M:%S}.{ns // 1_000 % 1_000_000:06d}Z"


class KrakenLines(BinanceLines):
    """The text of Kraken's v2 lines (`book` snapshot and updates, `trade`) over the same frames."""

    snapshot_replaces_opening = True

    def __init__(self, instrument: Instrument, where: Path) -> None:
        self.pair = kraken_pair(instrument)
        self.where = where
        self.tick, self.lot = instrument.tick_size, instrument.lot_size
        self.file_prefix = f"kraken_spot_{self.pair.replace('/', '').lower()}"
        self.zero = format(Decimal(0).quantize(self.lot.normalize()), "f")  # a removal's quantity text
        # The whole synthetic book, {price: (price text, size text)} a side, walked message by message.
        self.asks, self.bids = BookSide(bids=False), BookSide(bids=True)

    def snapshot_id(self, first_u: int) -> int:
        return first_u  # the snapshot is the opening message

    def _levels(self, levels: list[tuple[str, str]]) -> str:
        return "[" + ",".join(f'{{"price":{price},"qty":{size}}}' for price, size in levels) + "]"

    def _book_line(self, kind: str, asks: list[tuple[str, str]], bids: list[tuple[str, str]], view, ns: int) -> str:
        """A v2 `book` message; `view` the (asks, bids) texts its checksum covers, best first."""
        covered = view[0][:CHECKSUM_LEVELS] + view[1][:CHECKSUM_LEVELS]
        checksum = zlib.crc32("".join(_checksum_text(p) + _checksum_text(s) for p, s in covered).encode("ascii"))
        return (
            f'{{"channel":"book","type":"{kind}","data":[{{"symbol":"{self.pair}","bids":{self._levels(bids)},'
            f'"asks":{self._levels(asks)},"checksum":{checksum},"timestamp":"{_iso(ns)}"}}]}}'
        )

    def diffs(self, rows: pl.DataFrame) -> pl.DataFrame:
        """One `book` update line per message (u, recv, origin_ms, text), null text where the
        message changes nothing in the subscriber's view (Kraken sends nothing)."""
        frame = self.with_texts(rows)
        out: dict[str, list] = {"u": [], "recv": [], "origin_ms": [], "text": []}
        columns = ("u", "received_time", "origin_time", "side_is_bid", "price", "size", *LEVEL_TEXTS)
        u, recv, origins, is_bid, price, size, price_text, size_text = (frame[c].to_list() for c in columns)
        start = 0
        for end in range(1, len(u) + 1):
            if end < len(u) and u[end] == u[start]:
                continue
            views = (self.asks.top(DEPTH), self.bids.top(DEPTH))
            for i in range(start, end):
                side = self.bids if is_bid[i] else self.asks
                if size[i] > 0:
                    side.put(price[i], (price_text[i], size_text[i]))
                else:
                    side.remove(price[i])
            sent = [self._sent(side, before) for side, before in zip((self.asks, self.bids), views, strict=True)]
            origin = origins[start]
            text = None
            if sent[0] or sent[1]:
                view = tuple([texts for _, texts in side.top(DEPTH)] for side in (self.asks, self.bids))
                text = self._book_line("update", sent[0], sent[1], view, origin)
            for name, value in zip(out, (u[start], recv[start], origin // NS_PER_MS, text), strict=True):
                out[name].append(value)
            start = end
        return pl.DataFrame(out, schema={"u": pl.Int64, "recv": pl.Int64, "origin_ms": pl.Int64, "text": pl.String})

    def _sent(self, side: BookSide, before: list) -> list[tuple[str, str]]:
        """What Kraken sends for a side whose view was `before`: removals, then changes and entries."""
        after = side.top(DEPTH)
        shown = dict(before)
        kept = {price for price, _ in after}
        removed = [(texts[0], self.zero) for price, texts in before if price not in kept and price not in side.levels]
        return removed + [texts for price, texts in after if shown.get(price) != texts]

    def snapshot(self, opening: pl.DataFrame, last_update_id: int, origin_ms: int) -> str:
        """The `book` snapshot of the opening message's best `DEPTH` levels a side."""
        levels = self.with_texts(opening.filter(pl.col("size") > 0))
        sides = [
            levels.filter(pl.col("side_is_bid") == bid).sort("price", descending=bid).head(DEPTH).select(LEVEL_TEXTS)
            for bid in (False, True)
        ]
        asks, bids = (side.rows() for side in sides)
        return self._book_line("snapshot", asks, bids, (asks, bids), origin_ms * NS_PER_MS)

    def tickers(self, truth: pl.DataFrame) -> pl.DataFrame:
        """None: the recorder subscribes to no top-of-book stream on Kraken."""
        return pl.DataFrame(schema={"u": pl.Int64, "recv": pl.Int64, "text": pl.String})

    def trades(self, trades: pl.DataFrame) -> pl.DataFrame:
        """One `trade` line per trade: recv, text."""
        price, quantity = self.trade_texts(trades, "Kraken")
        stamp = pl.from_epoch("origin_time", time_unit="ns").dt.strftime("%Y-%m-%dT%H:%M:%S%.6fZ")
        text = pl.concat_str(
            [
                pl.lit(f'{{"channel":"trade","type":"update","data":[{{"symbol":"{self.pair}","side":"'),
                pl.col("side"),
                pl.lit('","price":'),
                price,
                pl.lit(',"qty":'),
                quantity,
                pl.lit(',"ord_type":"limit","trade_id":'),
                pl.col("trade_id"),
                pl.lit(',"timestamp":"'),
                stamp,
                pl.lit('"}]}'),
            ]
        )
        return trades.select(recv=pl.col("received_time"), text=text)

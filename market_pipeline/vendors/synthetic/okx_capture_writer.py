"""A generated synthetic day written as an OKX v5 capture (`capture --exchange okx`'s format,
docs/capture.md#okx-captures), with exact ground truth: the reference of an OKX vendor day in
`source_agreement`, and a day for `verify-capture` and the `okx_capture` source.

The day's walk is `capture_writer`'s (`write_capture_day(..., renderer=OkxLines)`); the lines are OKX's:
- the day's first message (the whole book at midnight) as the `books` snapshot (`action`
  snapshot, `prevSeqId` -1, each side best first), every later message as an update with
  `seqId` = its update id and `prevSeqId` = the one before (the synthetic ids are consecutive), so
  a message missing from the day breaks OKX's chain;
- one `bbo-tbt` line per ground-truth row (the true best bid and ask, `seqId` the book's);
- every trade as a `trades` line (`side` the taker's, `tradeId` the synthetic id).
`ts` is the exchange time in ms; levels are `[price, size, "0", "1"]` with exact decimal texts on
the instrument's grid. Every `books` message carries the checksum OKX sent before it retired the
field in 2026: the signed CRC32 of the best 25 levels interleaved as sent (`okx.verify`'s, over the
book a `books` subscriber keeps: the levels sent, at most 400 a side), so a message missing from
the capture, or a wrong level, shows at the next checksum.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from market_pipeline.core.instruments import Instrument
from market_pipeline.vendors.exchange_books import TextBook, signed_crc32
from market_pipeline.vendors.okx.capture_format import BOOK_DEPTHS
from market_pipeline.vendors.okx.verify import checksum_text
from market_pipeline.vendors.synthetic.capture_writer import LEVEL_TEXTS, NS_PER_MS, BinanceLines

CHANNEL = "books"


def okx_names(instrument: Instrument) -> tuple[str, str]:
    """(OKX market, OKX instrument id) of an OKX instrument: OKX:BTC-USDT -> (spot, BTC-USDT),
    OKX:BTC-USDT-PERP -> (swap, BTC-USDT-SWAP)."""
    parts = instrument.symbol.upper().split("-")
    if instrument.exchange != "OKX" or len(parts) not in (2, 3) or (len(parts) == 3 and parts[2] != "PERP"):
        raise ValueError(f"{instrument.key}: an OKX capture is written for OKX spot pairs and perpetuals only")
    if len(parts) == 3:
        return "swap", f"{parts[0]}-{parts[1]}-SWAP"
    return "spot", instrument.symbol.upper()


class OkxLines(BinanceLines):
    """The text of OKX's lines (`books`, `bbo-tbt`, `trades`) over the same frames."""

    snapshot_replaces_opening = True
    level_tail = ',"0","1"'

    def __init__(self, instrument: Instrument, where: Path) -> None:
        market, self.inst_id = okx_names(instrument)
        self.where = where
        self.tick, self.lot = instrument.tick_size, instrument.lot_size
        self.file_prefix = f"okx_{market}_{self.inst_id.lower()}"
        self.book = TextBook(BOOK_DEPTHS[CHANNEL])  # the subscriber's book, walked message by message

    def snapshot_id(self, first_u: int) -> int:
        return first_u  # the snapshot is the opening message

    def _arg(self, channel: str) -> str:
        return f'{{"arg":{{"channel":"{channel}","instId":"{self.inst_id}"}},'

    def _checksums(self, rows: pl.DataFrame) -> list[int]:
        """OKX's checksum after each message of `rows` (in order), walking the subscriber's book."""
        frame = self.with_texts(rows).select("u", "side_is_bid", *LEVEL_TEXTS)
        checksums: list[int] = []
        for (_,), message in frame.partition_by("u", maintain_order=True, as_dict=True).items():
            levels = list(zip(message["side_is_bid"], message["price_text"], message["size_text"], strict=True))
            bids = [(p, q) for is_bid, p, q in levels if is_bid]
            asks = [(p, q) for is_bid, p, q in levels if not is_bid]
            self.book.apply(bids, asks)
            checksums.append(signed_crc32(checksum_text(self.book)))
        return checksums

    def diffs(self, rows: pl.DataFrame) -> pl.DataFrame:
        """One `books` update line per message: u, recv, origin_ms, text."""
        messages = self.messages(rows).with_columns(checksum=pl.Series(self._checksums(rows), dtype=pl.Int64))
        text = pl.concat_str(
            [
                pl.lit(self._arg(CHANNEL) + '"action":"update","data":[{"asks":['),
                pl.col("a").fill_null(""),
                pl.lit('],"bids":['),
                pl.col("b").fill_null(""),
                pl.lit('],"ts":"'),
                pl.col("origin_ms").cast(pl.String),
                pl.lit('","checksum":'),
                pl.col("checksum").cast(pl.String),
                pl.lit(',"prevSeqId":'),
                (pl.col("u") - 1).cast(pl.String),
                pl.lit(',"seqId":'),
                pl.col("u").cast(pl.String),
                pl.lit("}]}"),
            ]
        )
        return messages.with_columns(text=text)

    def snapshot(self, opening: pl.DataFrame, last_update_id: int, origin_ms: int) -> str:
        """The `books` snapshot of the opening message's levels, each side best first."""
        bids, asks = self.book_sides(opening)
        texts = self.with_texts(opening.filter(pl.col("size") > 0))
        sides = [texts.filter(pl.col("side_is_bid") == b).select(LEVEL_TEXTS).rows() for b in (True, False)]
        book = TextBook(BOOK_DEPTHS[CHANNEL])
        book.load(*sides)
        checksum = signed_crc32(checksum_text(book))
        return (
            self._arg(CHANNEL) + f'"action":"snapshot","data":[{{"asks":[{asks}],"bids":[{bids}],'
            f'"ts":"{origin_ms}","checksum":{checksum},"prevSeqId":-1,"seqId":{last_update_id}}}]}}'
        )

    def tickers(self, truth: pl.DataFrame) -> pl.DataFrame:
        """One `bbo-tbt` line per truth row (joined to its message: u, recv, origin_ms)."""
        texts = self.top_texts(truth)
        text = pl.concat_str(
            [
                pl.lit(self._arg("bbo-tbt") + '"data":[{"asks":[["'),
                texts["ask_0_price"],
                pl.lit('","'),
                texts["ask_0_size"],
                pl.lit('","0","1"]],"bids":[["'),
                texts["bid_0_price"],
                pl.lit('","'),
                texts["bid_0_size"],
                pl.lit('","0","1"]],"ts":"'),
                pl.col("origin_ms").cast(pl.String),
                pl.lit('","seqId":'),
                pl.col("u").cast(pl.String),
                pl.lit("}]}"),
            ]
        )
        return truth.select("u", "recv", text=text)

    def trades(self, trades: pl.DataFrame) -> pl.DataFrame:
        """One `trades` line per trade: recv, text."""
        price, quantity = self.trade_texts(trades)
        text = pl.concat_str(
            [
                pl.lit(self._arg("trades") + f'"data":[{{"instId":"{self.inst_id}","tradeId":"'),
                pl.col("trade_id"),
                pl.lit('","px":"'),
                price,
                pl.lit('","sz":"'),
                quantity,
                pl.lit('","side":"'),
                pl.col("side"),
                pl.lit('","ts":"'),
                (pl.col("origin_time") // NS_PER_MS).cast(pl.String),
                pl.lit('","count":"1"}]}'),
            ]
        )
        return trades.select(recv=pl.col("received_time"), text=text)

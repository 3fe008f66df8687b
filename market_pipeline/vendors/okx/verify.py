"""Verify an OKX v5 capture: exact replay of an incremental book channel under OKX's sequence
rules, its CRC32 checksum and its top-of-book channels as the oracles.

Rules (OKX's "Order book channel" documentation, docs/capture.md#okx-captures):

- A snapshot (`action` snapshot, `prevSeqId` -1) loads the book; a later one, after a reconnect
  or a resubscription, reloads it (a resync).
- An update must name the last message's `seqId` as its `prevSeqId`; otherwise messages were
  lost: a sequence break, counted by hour, and the book is unsynced (updates dropped) until the
  next snapshot. An update whose `seqId` is below its `prevSeqId` is OKX's sequence reset after
  maintenance: counted, applied, the chain goes on from it. A keepalive update (no levels,
  `seqId` == `prevSeqId`) is applied like any other.
- Levels apply in order, size "0" removes a level; the book is truncated to the channel's depth.
- After every snapshot and update whose `checksum` is not 0, the signed CRC32 of the top 25
  levels interleaved (bid, ask, bid, ask, ... each `price:size` as sent, joined by `:`) must
  equal it; a disagreement unsyncs the book. A checksum of 0 (every message since OKX retired
  the field in 2026) is counted as not checked.
- `bbo-tbt` and `books5` messages are compared with the synced book at the same `seqId`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from pathlib import Path

from market_pipeline.core.quality.checksums import ChecksumFigures
from market_pipeline.vendors.book_replay import BookReplay
from market_pipeline.vendors.capture_figures import day_checksums as replay_day_checksums
from market_pipeline.vendors.capture_files import decode_json
from market_pipeline.vendors.exchange_books import TextBook, signed_crc32
from market_pipeline.vendors.okx import capture_format as fmt

LAKE_EXCHANGE = "OKX"
CHECKSUM_LEVELS = 25


def checksum_text(book: TextBook) -> str:
    """OKX's checksum input: the best 25 bids and asks interleaved, `price:size` as sent; a side
    with fewer levels leaves its turns out ("3366.1:7:3366.8:9:3368:8:3372:8")."""
    bids, asks = book.bids.top(CHECKSUM_LEVELS), book.asks.top(CHECKSUM_LEVELS)
    parts = []
    for i in range(max(len(bids), len(asks))):
        for side in (bids, asks):
            if i < len(side):
                price, size = side[i][1]
                parts.append(f"{price}:{size}")
    return ":".join(parts)


class _Replay(BookReplay):
    """BookReplay under OKX's rules."""

    def __init__(self) -> None:
        super().__init__(LAKE_EXCHANGE)
        self.seq_id: int | None = None  # the last applied message's seqId: the next prevSeqId

    book_type, top_type = fmt.BookMessage, fmt.TopMessage

    def classify(self, body: str) -> fmt.BookMessage | fmt.TopMessage | fmt.Trades | None:
        if body.strip() == "pong":  # the answer to the keepalive "ping", not JSON
            return None
        return fmt.classify(decode_json(body))

    def instrument_of(self, item: fmt.BookMessage | fmt.TopMessage | fmt.Trades) -> str:
        return item.inst_id

    def book_message(self, message: fmt.BookMessage, path: Path, line_number: int, recv_ns: int) -> None:
        self.check_stream(message.channel)
        if message.snapshot:
            self.load(fmt.BOOK_DEPTHS[message.channel], message.bids, message.asks)
        else:
            if not self.update_applies():
                return
            if message.prev_seq_id != self.seq_id:
                self.counts["dropped_after_gap"] += 1
                chain = {"expected_prev_seq_id": self.seq_id, "prev_seq_id": message.prev_seq_id}
                self.broken(path, line_number, recv_ns, "sequence break", **chain)
                return
            if message.seq_id < message.prev_seq_id:
                self.counts["sequence_resets"] += 1
                self.tops.restart(message.seq_id)
            self.apply(message.bids, message.asks)
        self.seq_id = message.seq_id
        if message.checksum == 0:
            self.counts["checksums_unchecked"] += 1
        else:
            self.counts["checksums_checked"] += 1
            computed = signed_crc32(checksum_text(self.book))
            if computed != message.checksum:
                self.counts["checksum_mismatches"] += 1
                self.broken(path, line_number, recv_ns, "checksum", checksum=message.checksum, computed=computed)
                return
        self.applied(message.seq_id)


def replay_files(paths: Sequence[Path]) -> _Replay:
    """Replay OKX capture files of one instrument, in order, a line at a time."""
    replay = _Replay()
    replay.replay_files(paths, "no message of a books channel: not an OKX book capture")
    return replay


def verify_capture(paths: Sequence[Path]) -> dict[str, object]:
    """verify-capture's figures of OKX capture files of one instrument."""
    replay = replay_files(paths)
    return replay.result(fmt.market_of(replay.instrument))


def day_checksums(paths: Sequence[Path], day: dt.date) -> ChecksumFigures:
    """OKX's checksums of the `books` messages of one instrument's capture files received on `day`
    (`capture_figures.day_checksums`), for the `okx_capture` source's `exchange_checksums`."""
    return replay_day_checksums(_Replay(), paths, day)

"""Verify a Bybit v5 capture: exact replay of an `orderbook.<depth>` topic under Bybit's update-id
rules, its `orderbook.1` top-of-book stream as the oracle (Bybit sends no book checksum).

Rules (Bybit's v5 "Orderbook" documentation, docs/capture.md#bybit-captures):

- A snapshot loads the book; a later one (a reconnect, a resubscription, or Bybit re-sending one
  after a problem on its side) reloads it: a resync. A snapshot with `u` = 1 is Bybit's service
  restart ("Occasionally, you'll receive "u"=1, which is a snapshot data due to the restart of
  the service. So please overwrite your local orderbook"): the book is reloaded and the restart
  counted (`sequence_resets`).
- `u` is the topic's update id, one more on every message ("Update ID. Is a sequence"; the
  documentation's zh-TW page: the id is consecutive in general): a delta whose `u` is not the
  previous message's + 1 follows lost messages: a sequence break, counted by hour, and the book
  is unsynced (deltas dropped) until the next snapshot.
- Levels apply in order, size "0" removes a level; the book is truncated to the topic's depth.
- `orderbook.1` snapshots are compared with the synced book at the same `seq`, the matching
  engine's cross sequence ("You can use this field to compare different levels orderbook data").
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from market_pipeline.vendors.book_replay import BookReplay
from market_pipeline.vendors.bybit import capture_format as fmt
from market_pipeline.vendors.capture_figures import file_market
from market_pipeline.vendors.capture_files import decode_json

LAKE_EXCHANGE = "BYBIT"
RESTART_UPDATE_ID = 1


class _Replay(BookReplay):
    """BookReplay under Bybit's rules."""

    def __init__(self) -> None:
        super().__init__(LAKE_EXCHANGE)
        self.update_id: int | None = None  # the last applied message's u

    book_type, top_type = fmt.BookMessage, fmt.TopMessage

    def classify(self, body: str) -> fmt.BookMessage | fmt.TopMessage | fmt.Trades | None:
        return fmt.classify(decode_json(body))

    def instrument_of(self, item: fmt.BookMessage | fmt.TopMessage | fmt.Trades) -> str:
        return item.symbol

    def book_message(self, message: fmt.BookMessage, path: Path, line_number: int, recv_ns: int) -> None:
        self.check_stream(f"orderbook.{message.depth}")
        if message.snapshot:
            # `u` restarts, `seq` (the matching engine's) is not said to: the waiting quotes stay.
            self.counts["sequence_resets"] += message.update_id == RESTART_UPDATE_ID and self.book is not None
            self.load(message.depth, message.bids, message.asks)
        else:
            if not self.update_applies():
                return
            if message.update_id != self.update_id + 1:
                self.counts["dropped_after_gap"] += 1
                chain = {"expected_u": self.update_id + 1, "u": message.update_id}
                self.broken(path, line_number, recv_ns, "sequence break", **chain)
                return
            self.apply(message.bids, message.asks)
        self.update_id = message.update_id
        self.applied(message.seq)


def replay_files(paths: Sequence[Path]) -> _Replay:
    """Replay Bybit capture files of one instrument, in order, a line at a time."""
    replay = _Replay()
    replay.replay_files(paths, "no orderbook message deeper than 1: not a Bybit book capture")
    return replay


def verify_capture(paths: Sequence[Path]) -> dict[str, object]:
    """verify-capture's figures of Bybit capture files of one instrument."""
    replay = replay_files(paths)
    return replay.result(file_market(paths[0]))

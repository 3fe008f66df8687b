"""The replay state OKX's and Bybit's verify-capture share: one instrument, one book stream, a
`TextBook` loaded by snapshots and kept by numbered updates, a top-of-book stream as an oracle.

Each exchange's `verify` module reads its lines and decides, by its own rules, whether an update
continues the chain; this class does the bookkeeping the rules have in common: a snapshot loads
the book (a later one is a resync), an update before the first snapshot is skipped, one while
unsynced dropped, a break or an oracle's disagreement unsyncs the book until the next snapshot
(counted by hour, the first one named), and after every applied message the crossed count and
the quotes of the top-of-book stream at the book's sequence number.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from market_pipeline.vendors.capture_figures import ReplayFigures, TopOfBookOracle, TopQuote
from market_pipeline.vendors.capture_files import CaptureFormatError, located_lines
from market_pipeline.vendors.exchange_books import Level, TextBook, step_text


class BookReplay:
    """One replay over an exchange's capture files of one instrument."""

    def __init__(self, exchange: str) -> None:
        self.exchange = exchange
        self.instrument: str | None = None
        self.stream: str | None = None  # the book's channel or topic
        self.book: TextBook | None = None
        self.synced = False
        self.book_seq: int | None = None  # the synced book's sequence number, as quotes number it
        self.figures = ReplayFigures()
        self.counts = self.figures.counts
        self.tops = TopOfBookOracle(self.figures)

    # The exchange's classes of a decoded line: a book message (its own rules: `book_message`) and a
    # top-of-book message (a `quote`); anything else `classify` returns is trades (a `count`).
    book_type: type
    top_type: type

    def classify(self, body: str) -> Any:
        """A line's message as the exchange's class, or None when it is none of them."""
        raise NotImplementedError

    def instrument_of(self, item: Any) -> str:
        raise NotImplementedError

    def book_message(self, message: Any, path: Path, line_number: int, recv_ns: int) -> None:
        raise NotImplementedError

    def line(self, path: Path, line_number: int, recv_ns: int, body: str) -> None:
        """One line: a book message by the exchange's rules, a quote for the oracle, or trades."""
        try:
            item = self.classify(body)
            if item is None:
                return
            self.check_instrument(self.instrument_of(item))
            if isinstance(item, self.book_type):
                self.book_message(item, path, line_number, recv_ns)
            elif isinstance(item, self.top_type):
                self.quote(item.quote, path, line_number, recv_ns)
            else:
                self.counts["trades"] += item.count
        except ValueError as exc:  # json.JSONDecodeError is a ValueError
            raise CaptureFormatError(path, line_number, str(exc)) from None

    def replay_files(self, paths: Sequence[Path], not_a_capture: str) -> None:
        """Every line of `paths` (one instrument's capture files, in order); CaptureFormatError
        naming the first file with `not_a_capture` when none holds a message of a book stream."""
        for path, line_number, recv_ns, body in located_lines(paths):
            self.line(path, line_number, recv_ns, body)
        if self.stream is None:
            raise CaptureFormatError(paths[0], None, not_a_capture)

    def check_instrument(self, instrument: str) -> None:
        if self.instrument is None:
            self.instrument = instrument
        elif instrument != self.instrument:
            raise ValueError(f"message of {instrument} in a replay of {self.instrument}: one instrument per run")

    def check_stream(self, stream: str) -> None:
        if self.stream is None:
            self.stream = stream
        elif stream != self.stream:
            raise ValueError(f"{stream} message in a replay of {self.stream}: one book stream per run")

    def load(self, depth: int, bids: list[Level], asks: list[Level]) -> None:
        """A snapshot: the book from scratch, synced (the caller then calls `applied`)."""
        self.counts["snapshots"] += 1
        self.counts["resyncs"] += self.book is not None
        if self.book is None:
            self.book = TextBook(depth)
        self.book.load(bids, asks)
        self.synced = True

    def update_applies(self) -> bool:
        """Count an update; whether the book can take it (loaded and synced)."""
        self.counts["diffs"] += 1
        if self.book is None:
            self.counts["skipped_before_sync"] += 1
            return False
        if not self.synced:
            self.counts["dropped_after_gap"] += 1
            return False
        return True

    def apply(self, bids: list[Level], asks: list[Level]) -> None:
        self.counts["applied"] += 1
        self.counts["deltas_applied"] += self.book.apply(bids, asks)

    def broken(self, path: Path, line_number: int, recv_ns: int, reason: str, **details) -> None:
        """The message shows the book wrong (a sequence break, a checksum): unsynced until a snapshot."""
        self.figures.bad_update(path, line_number, recv_ns, reason, **details)
        self.figures.gap(recv_ns)
        self.synced = False
        self.book_seq = None

    def applied(self, seq: int) -> None:
        """After a snapshot or an update the book agrees with: crossed count, quotes at `seq`."""
        self.book_seq = seq
        self.counts["crossed_events"] += self.book.crossed()
        self.tops.book_at(self.book, seq)

    def quote(self, quote: TopQuote, path: Path, line_number: int, recv_ns: int) -> None:
        self.tops.quote(quote, self.book if self.synced else None, self.book_seq, path, line_number, recv_ns)

    def result(self, market: str | None) -> dict[str, object]:
        book = self.book
        best_bid, best_ask = book.best_texts() if book is not None else (None, None)
        return self.figures.result(
            market=market,
            exchange=self.exchange,
            symbol=self.instrument,
            in_sync=self.synced,
            tick_size=step_text(book.price_decimals if book is not None else 0),
            lot_size=step_text(book.size_decimals if book is not None else 0),
            best_bid=best_bid,
            best_ask=best_ask,
        )

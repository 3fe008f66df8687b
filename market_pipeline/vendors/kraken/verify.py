"""Verify a Kraken spot capture: exact replay under Kraken's book rules, its CRC32 as the oracle.

The files are read in batches of `BATCH_LINES` lines (memory bounded by the batch and the book,
at most 1000 levels a side). A snapshot loads the book (a later one, after a reconnect or a
resubscription, reloads it: a resync); every update is applied in order and, when it carries a
checksum, the top 10 levels are checked against it (v2 snapshots carry one too). A disagreement
counts a mismatch, names the update (file:line, receive time) when it is the first, and leaves
the book unsynced: updates are dropped until the next snapshot.

The figures have verify-capture's one shape (`capture_figures.ReplayFigures`); what does not apply
to Kraken is 0 or null (docs/capture.md#kraken-spot-captures).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from pathlib import Path

from market_pipeline.core.quality.checksums import ChecksumFigures
from market_pipeline.vendors.capture_figures import ReplayFigures
from market_pipeline.vendors.capture_figures import day_checksums as replay_day_checksums
from market_pipeline.vendors.capture_files import CaptureFormatError, located_lines
from market_pipeline.vendors.kraken import capture_format as fmt
from market_pipeline.vendors.kraken.book import KrakenBook, fixed_text

BATCH_LINES = 10_000
LAKE_EXCHANGE = "KRAKEN"


class _Replay:
    """The state of one replay over the files: the book, whether it is synced, the figures."""

    def __init__(self) -> None:
        self.symbol: str | None = None
        self.depth: int | None = None  # from the subscription answer, when the capture has one
        self.book: KrakenBook | None = None
        self.synced = False
        self.figures = ReplayFigures()
        self.counts = self.figures.counts

    def line(self, path: Path, line_number: int, recv_ns: int, body: str) -> None:
        try:
            item = fmt.classify(fmt.decode(body))
            if isinstance(item, fmt.BookMessage):
                self._book_message(item, path, line_number, recv_ns)
            elif isinstance(item, fmt.Subscribed):
                self._instrument(item.symbol)
                self.depth = item.depth
            elif isinstance(item, fmt.Trades):
                self.counts["trades"] += item.count
        except ValueError as exc:  # json.JSONDecodeError, PrecisionError are ValueErrors
            raise CaptureFormatError(path, line_number, str(exc)) from None

    def _instrument(self, symbol: str) -> None:
        if self.symbol is None:
            self.symbol = symbol
        elif symbol != self.symbol:
            raise ValueError(f"book of {symbol} in a replay of {self.symbol}: one pair per run")

    def _book_message(self, message: fmt.BookMessage, path: Path, line_number: int, recv_ns: int) -> None:
        self._instrument(message.symbol)
        counts = self.counts
        if message.snapshot:
            depth = fmt.subscribed_depth(message, self.depth)
            counts["snapshots"] += 1
            counts["resyncs"] += self.book is not None
            self.book, self.synced = KrakenBook(message, depth), True
            if message.checksum is not None:
                self._check(message.checksum, path, line_number, recv_ns)
            return
        counts["diffs"] += 1
        if self.book is None:
            counts["skipped_before_sync"] += 1
            return
        if not self.synced:
            counts["dropped_after_gap"] += 1
            return
        counts["applied"] += 1
        self.book.apply(message)
        counts["deltas_applied"] += len(message.asks) + len(message.bids)
        if message.checksum is not None:
            self._check(message.checksum, path, line_number, recv_ns)

    def _check(self, sent: int, path: Path, line_number: int, recv_ns: int) -> None:
        asks, bids = self.book.top()
        self.counts["crossed_events"] += bool(asks and bids and bids[0][0] >= asks[0][0])
        self.counts["checksums_checked"] += 1
        computed = self.book.checksum()
        if computed == sent:
            return
        self.counts["checksum_mismatches"] += 1
        self.figures.gap(recv_ns)
        self.synced = False
        self.figures.bad_update(path, line_number, recv_ns, "checksum", checksum=sent, computed=computed)

    def result(self) -> dict[str, object]:
        """verify-capture's JSON (capture_figures.ReplayFigures's shape)."""
        book = self.book
        asks, bids = book.top() if book is not None else ([], [])
        price_scale = book.price_scale if book is not None else 0
        qty_scale = book.qty_scale if book is not None else 0
        return self.figures.result(
            market="spot",
            exchange=LAKE_EXCHANGE,
            symbol=self.symbol.replace("/", "-"),
            in_sync=self.synced,
            tick_size=fixed_text(1, price_scale),
            lot_size=fixed_text(1, qty_scale),
            best_bid=fixed_text(bids[0][0], price_scale) if bids else None,
            best_ask=fixed_text(asks[0][0], price_scale) if asks else None,
        )


def verify_capture(paths: Sequence[Path]) -> dict[str, object]:
    """Replay Kraken capture files of one pair, in order; verify-capture's figures."""
    replay = _Replay()
    for path, line_number, recv_ns, body in located_lines(paths):
        replay.line(path, line_number, recv_ns, body)
    if replay.symbol is None:
        raise CaptureFormatError(paths[0], None, "no book message nor book subscription: not a Kraken book capture")
    return replay.result()


def day_checksums(paths: Sequence[Path], day: dt.date) -> ChecksumFigures:
    """Kraken's checksums of the book messages of one pair's capture files received on `day`
    (`capture_figures.day_checksums`): what a Kraken capture source's `exchange_checksums` returns."""
    return replay_day_checksums(_Replay(), paths, day)

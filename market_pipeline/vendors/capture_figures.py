"""verify-capture's one JSON shape for every exchange, and the top-of-book oracle of the exchanges
whose replays run in plain Python (Kraken, OKX, Bybit; Binance's numba replay fills the same keys).

`ReplayFigures` holds the counters, the breaks by hour of their receive time and the first bad
update (the first line at which the replay found the capture damaged: a sequence break, a
checksum or a top-of-book stream disagreeing), and renders them in the key order Binance's
replay has always printed, the checksum and sequence keys after it. What does not apply to an
exchange stays 0 or null (docs/capture.md#verify-capture-the-figures).

`TopOfBookOracle` compares an exchange's top-of-book stream (OKX `bbo-tbt`/`books5`, Bybit
`orderbook.1`) with the replayed book when both carry the same sequence number: the same state
of the exchange's book, whichever of the two messages came first in the file (as Binance's
bookTickers are checked at the u of an applied diff).

`day_checksums` runs a replay over an instrument-day's capture files and keeps the exchange
checksums of the messages received within the day: what a capture source reports to the pipeline
(`vendors/base.exchange_checksums`).
"""

from __future__ import annotations

import datetime as dt
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from market_pipeline.core.day_clock import NS_PER_DAY, day_start_ns
from market_pipeline.core.quality.checksums import ChecksumFigures, ChecksumMismatch
from market_pipeline.vendors.capture_files import located_lines
from market_pipeline.vendors.exchange_books import Level, TextBook

COUNT_KEYS = (
    "diffs",
    "skipped_before_sync",
    "applied",
    "gaps",
    "resyncs",
    "ticker_checks",
    "ticker_mismatches",
    "dropped_after_gap",
    "crossed_events",
    "snapshots",
    "deltas_applied",
    "crossed_levels_removed",
    "trades",
    "checksums_checked",
    "checksum_mismatches",
    "checksums_unchecked",
    "sequence_resets",
)

# The keys a replay without book checksums, sequence resets or breaks by hour prints (Binance's).
NO_BOOK_CHECKS: dict[str, object] = {
    "checksums_checked": 0,
    "checksum_mismatches": 0,
    "first_bad_update": None,
    "checksums_unchecked": 0,
    "sequence_resets": 0,
    "gaps_by_hour": None,
}


def hour_of(recv_ns: int) -> str:
    """The UTC hour of a receive time, `YYYY-MM-DDTHH` (the key of `gaps_by_hour`)."""
    return dt.datetime.fromtimestamp(recv_ns // 1_000_000_000, dt.UTC).strftime("%Y-%m-%dT%H")


def file_market(path: Path) -> str | None:
    """The market part of `<exchange>_<market>_<symbol>_<YYYYMMDD>.gz`, None for another name."""
    parts = Path(path).name.split("_")
    return parts[1] if len(parts) >= 4 else None


class ReplayFigures:
    """The counters of one replay and the first bad update, rendered as verify-capture's JSON."""

    def __init__(self) -> None:
        self.counts = dict.fromkeys(COUNT_KEYS, 0)
        self.first_mismatch_ticker = -1
        self.first_bad_update: dict | None = None
        self.gaps_by_hour: Counter[str] = Counter()

    def gap(self, recv_ns: int) -> None:
        """A break that leaves the book unsynced until a snapshot, counted by hour."""
        self.counts["gaps"] += 1
        self.gaps_by_hour[hour_of(recv_ns)] += 1

    def bad_update(self, path: Path, line_number: int, recv_ns: int, reason: str, **details) -> None:
        """Record the first line at which the capture was found damaged (later ones only count)."""
        if self.first_bad_update is None:
            self.first_bad_update = {
                "file": str(path),
                "line": line_number,
                "received_time": recv_ns,
                "reason": reason,
                **details,
            }

    def result(
        self,
        *,
        market: str | None,
        exchange: str,
        symbol: str,
        in_sync: bool,
        tick_size: str,
        lot_size: str,
        best_bid: str | None,
        best_ask: str | None,
    ) -> dict[str, object]:
        c = self.counts
        return {
            "market": market,
            "exchange": exchange,
            "symbol": symbol,
            "diffs": c["diffs"],
            "skipped_before_sync": c["skipped_before_sync"],
            "applied": c["applied"],
            "gaps": c["gaps"],
            "resyncs": c["resyncs"],
            "ticker_checks": c["ticker_checks"],
            "ticker_mismatches": c["ticker_mismatches"],
            "dropped_after_gap": c["dropped_after_gap"],
            "unsynced_at_end": int(not in_sync),
            "crossed_events": c["crossed_events"],
            "snapshots": c["snapshots"],
            "first_mismatch_ticker": self.first_mismatch_ticker,
            "deltas_applied": c["deltas_applied"],
            "crossed_levels_removed": c["crossed_levels_removed"],
            "trades": c["trades"],
            "in_sync_at_end": in_sync,
            "tick_size": tick_size,
            "lot_size": lot_size,
            "final_best_bid": best_bid,
            "final_best_ask": best_ask,
            "checksums_checked": c["checksums_checked"],
            "checksum_mismatches": c["checksum_mismatches"],
            "first_bad_update": self.first_bad_update,
            "checksums_unchecked": c["checksums_unchecked"],
            "sequence_resets": c["sequence_resets"],
            "gaps_by_hour": dict(sorted(self.gaps_by_hour.items())),
        }


@dataclass
class TopQuote:
    """One message of a top-of-book stream: its best `depth` levels a side at sequence `seq`."""

    seq: int
    depth: int
    bids: list[Level]
    asks: list[Level]


@dataclass
class _Pending:
    quote: TopQuote
    index: int
    path: Path
    line_number: int
    recv_ns: int


# Quotes waiting for the book message of their sequence number: the top-of-book stream runs ahead
# of the book by one conflation interval (OKX's bbo-tbt every 10 ms, books every 100 ms), so a few
# tens at a time, looked through at every book message; the cap bounds memory while the book is
# unsynced for long.
PENDING_QUOTES = 10_000


class TopOfBookOracle:
    """Checks a top-of-book stream against the book at equal sequence numbers."""

    def __init__(self, figures: ReplayFigures) -> None:
        self.figures = figures
        self.quotes = 0
        self._pending: deque[_Pending] = deque(maxlen=PENDING_QUOTES)

    def quote(
        self, quote: TopQuote, book: TextBook | None, book_seq: int | None, path: Path, line: int, recv_ns: int
    ) -> None:
        """A top-of-book message: checked now when the synced book (`book`, else None) is at its
        sequence number, else kept for a book message of that number (one may come later, also
        after a lower number: OKX's and Bybit's sequences restart)."""
        held = _Pending(quote, self.quotes, path, line, recv_ns)
        self.quotes += 1
        if book is not None and quote.seq == book_seq:
            self._check(held, book)
        else:
            self._pending.append(held)

    def book_at(self, book: TextBook, book_seq: int) -> None:
        """The synced book has reached `book_seq`: check the quotes of that number; those below it
        can no longer be checked (the book has passed them), those above wait."""
        if not self._pending:
            return
        waiting = deque(maxlen=PENDING_QUOTES)
        for held in self._pending:
            if held.quote.seq == book_seq:
                self._check(held, book)
            elif held.quote.seq > book_seq:
                waiting.append(held)
        self._pending = waiting

    def restart(self, book_seq: int) -> None:
        """The exchange's numbering restarted at `book_seq`: the quotes waiting with higher numbers
        were numbered before it and can never be checked."""
        self._pending = deque((held for held in self._pending if held.quote.seq <= book_seq), maxlen=PENDING_QUOTES)

    def _check(self, held: _Pending, book: TextBook) -> None:
        figures, quote = self.figures, held.quote
        figures.counts["ticker_checks"] += 1
        if book.agrees(quote.bids, quote.asks, quote.depth):
            return
        figures.counts["ticker_mismatches"] += 1
        if figures.first_mismatch_ticker < 0:
            figures.first_mismatch_ticker = held.index
        figures.bad_update(
            held.path,
            held.line_number,
            held.recv_ns,
            "top of book",
            seq=quote.seq,
            quote={"bids": quote.bids, "asks": quote.asks},
            book={side: [text for _, text in getattr(book, side).top(quote.depth)] for side in ("bids", "asks")},
        )


class LineReplay(Protocol):
    """An exchange's verify replay, as `day_checksums` drives it: a line at a time, its counters."""

    counts: dict[str, int]

    def line(self, path: Path, line_number: int, recv_ns: int, body: str) -> None: ...


_CHECKSUM_COUNTS = ("checksums_checked", "checksum_mismatches", "checksums_unchecked")


def day_checksums(replay: LineReplay, paths: Sequence[Path], day: dt.date) -> ChecksumFigures:
    """Replay an instrument's capture files of `day` (in time order; one that started the day
    before is read from its start, to have the book) a line at a time, in bounded memory, and count
    the exchange checksums of the lines received within the UTC day: checked, disagreeing (the
    first named by file, line and receive time) and not checkable (0)."""
    start = day_start_ns(day)
    end = start + NS_PER_DAY
    counts, tally = replay.counts, dict.fromkeys(_CHECKSUM_COUNTS, 0)
    first: ChecksumMismatch | None = None
    for path, line_number, recv_ns, body in located_lines(paths):
        before = [counts[key] for key in _CHECKSUM_COUNTS]
        replay.line(path, line_number, recv_ns, body)
        if not start <= recv_ns < end:
            continue
        for key, was in zip(_CHECKSUM_COUNTS, before, strict=True):
            tally[key] += counts[key] - was
        if first is None and counts["checksum_mismatches"] > before[1]:
            first = ChecksumMismatch(str(path), line_number, recv_ns)
    return ChecksumFigures(
        checked=tally["checksums_checked"],
        mismatches=tally["checksum_mismatches"],
        unchecked=tally["checksums_unchecked"],
        first_mismatch=first,
    )

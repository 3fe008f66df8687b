"""The metrics' pass over a day's deltas (`update_ranks.delta_pass`: update ranks, messages and rows
per hour, the skew sample) computed while the rebuild reads those deltas and writes the books, and
stored beside the books: `pipeline_metrics` then reads neither the deltas nor the books' snapshot
rows again (the pass was 0.85-0.95 s of the bench day's 1.4 s metrics step, most of it Arrow
decoding five delta columns and forty price columns the rebuild has just had in memory).

The rebuild hands the deltas in file order and its snapshot rows in the order it writes them (as
int64 ticks, before they become decimals), on a thread of their own. A delta ranks against the
last snapshot row strictly before it in time; when the snapshot rows come in time order, every one
still to come is at least as late as the latest so far, so a delta no later than that one has all
its candidates at hand and is ranked at once. Deltas later than it wait, a batch or two (the
writer lags the reader by that much), for a later snapshot row or the end of the books.

A rebuild that knows beforehand when its snapshot rows can come (the capture's: one at each REST
snapshot, a few a day) says so (`snapshot_rows_only_at`): a delta before the next of those times
has all its candidates too, and is ranked at once instead of waiting for a later snapshot row.
The capture's rebuild also hands each snapshot row as the kernel writes it, not when its batch of
rows is built: at most 0.5 M of the bench capture's deltas wait at once so, against 2.0 M.

That is the pass's answer only where the pass reads the same order: the deltas' received_time and
the snapshot rows' never go back, and each hour's sequence numbers never go down (so counting
their changes counts the distinct ones). Where one of these fails, or the rows waiting pass a
bound (MAX_WAITING_ROWS, MAX_HELD_SNAPSHOT_ROWS), the stream gives up and stores nothing, and the
metrics run the pass (`microstructure.compute_microstructure`), which answers for any order. Either
way the figures are the pass's (`test_delta_pass_stream.py` holds them equal).
"""

from __future__ import annotations

import logging
from collections import deque
from decimal import Decimal
from pathlib import Path

import numpy as np
import pyarrow as pa

from market_pipeline.core.day_clock import HOURS, NS_PER_HOUR
from market_pipeline.core.lake import parquet_io
from market_pipeline.core.lake.derived import read_derived, write_derived
from market_pipeline.core.quality.update_ranks import DeltaPass, HourMessages, SkewSample, add_ranks, hourly_frame

_log = logging.getLogger(__name__)
# Deltas waiting for a later snapshot row (~17 bytes a row) and snapshot rows held for deltas to
# come (~330 bytes at 20 levels). The rebuild hands a delta batch before the snapshot rows it
# writes after it, and its writer lags its reader by a batch or two (500,000 deltas, ~12,000
# snapshot rows of the bench day): only a day whose snapshots stop (its deltas wait), or whose
# deltas pause for hours between snapshots (the rows after the last delta are held), holds more.
MAX_WAITING_ROWS = 4_000_000
MAX_HELD_SNAPSHOT_ROWS = 200_000
_TAG = b"books"  # the stored pass names the books file it was made with (`derived.py`)
SCHEMA = pa.schema(
    [
        ("rank_counts", pa.list_(pa.int64())),
        ("book_messages", pa.list_(pa.int64())),
        ("book_delta_rows", pa.list_(pa.int64())),
        ("skew_sample_seconds", pa.list_(pa.float64())),
    ]
)


class DeltaPassStream:
    """`update_ranks.delta_pass` of the deltas at `deltas` and the books being written, from the
    rebuild's batches (`deltas`, `snapshots`, then `write`), stored at `path`. Not thread-safe:
    the rebuild calls it from one thread at a time, in order (`rebuild.py`)."""

    def __init__(self, path: Path, deltas: Path, tick: Decimal, levels: int, day_start: int, sample_rows: int):
        self.path, self.day_start, self.levels = path, day_start, levels
        self.tick = float(tick)
        self.tag = _extra(deltas, tick, levels, day_start, sample_rows)
        self.rows_expected = int(self.tag[b"deltas_rows"])
        self.gave_up: str | None = None
        self.counts = np.zeros(levels + 1, np.int64)
        self.messages = np.zeros(HOURS, np.int64)
        self.rows = np.zeros(HOURS, np.int64)
        self.skew = SkewSample(self.rows_expected, sample_rows)  # its `passed`: the delta rows so far
        self.last_time = np.iinfo(np.int64).min  # of the last delta row
        self.hour = -1  # of the last delta row, and its messages so far
        self.hour_messages = HourMessages()
        self.waiting: deque[tuple[np.ndarray, np.ndarray, np.ndarray]] = deque()  # received, is_bid, price
        self.waiting_rows = 0
        # Snapshot rows as handed (times, (levels, rows) bid and ask ticks), from the part holding
        # the last one before the first delta to come on.
        self.snapshot_parts: deque[tuple[np.ndarray, np.ndarray, np.ndarray]] = deque()
        self.snapshot_rows = 0
        self.latest_snapshot = np.iinfo(np.int64).min
        self.announced: np.ndarray | None = None  # the only times snapshot rows can come at, sorted
        self.next_announced = 0  # the first announced time no snapshot row has come at yet
        self.deltas_ended = False

    def snapshot_rows_only_at(self, times: np.ndarray) -> None:
        """Snapshot rows will come at these received_times, each as often as it is listed, and at
        no other: another row makes the stream give up, and a time listed but left out holds the
        deltas after it (up to MAX_WAITING_ROWS). Before any batch."""
        self.announced = np.sort(np.asarray(times, np.int64))

    def deltas(self, batch: dict[str, np.ndarray]) -> None:
        """The next delta rows of the file: `input_batches`' converted batch (received and origin
        time, sequence number, side, float price)."""
        if self.gave_up:
            return
        received = batch["recv"]
        n = len(received)
        if n == 0:
            return
        if received[0] < self.last_time or np.any(received[1:] < received[:-1]):
            return self._give_up("a delta's received_time goes back")
        self.last_time = received[-1]
        self._count_hours(received, batch["seq"])
        if self.gave_up:
            return
        self.skew.add(received, batch["orig"])
        self.waiting.append((received, batch["is_bid"], batch["price"]))
        self.waiting_rows += n
        self._rank(final=False)
        if self.waiting_rows > MAX_WAITING_ROWS:
            self._give_up(f"more than {MAX_WAITING_ROWS:,} deltas wait for a later snapshot row")

    def end_of_deltas(self) -> None:
        """Every delta row is in: snapshot rows matter now only to the deltas still waiting."""
        self.deltas_ended = True
        if not self.gave_up:
            self._rank(final=False)

    def snapshots(self, received: np.ndarray, bid_ticks: np.ndarray, ask_ticks: np.ndarray) -> None:
        """The next snapshot rows of the books: received_time and the (levels, rows) bid and ask
        ticks from the touch outwards, an absent level -1."""
        if self.gave_up or not len(received) or (self.deltas_ended and not self.waiting):
            return
        if received[0] < self.latest_snapshot or np.any(received[1:] < received[:-1]):
            return self._give_up("a snapshot row's received_time goes back")
        if self.announced is not None and not self._as_announced(received):
            return self._give_up("a snapshot row comes at a time the rebuild did not announce")
        self.latest_snapshot = received[-1]
        self.snapshot_parts.append((received, bid_ticks, ask_ticks))
        self.snapshot_rows += len(received)
        self._rank(final=False)
        if self.snapshot_rows > MAX_HELD_SNAPSHOT_ROWS:
            self._give_up(f"more than {MAX_HELD_SNAPSHOT_ROWS:,} snapshot rows wait for later deltas")

    def finish(self) -> DeltaPass | None:
        """The pass's figures, once every delta and snapshot row is in; None when it gave up."""
        if not self.gave_up:
            self._rank(final=True)
            if self.skew.passed != self.rows_expected:
                self._give_up(f"{self.skew.passed:,} delta rows came of the file's {self.rows_expected:,}")
        if self.gave_up:
            return None
        if self.hour >= 0:
            self.messages[self.hour] = self.hour_messages.changes
        return DeltaPass(self.counts.tolist(), hourly_frame(self.messages, self.rows), self.skew.seconds())

    def write(self, books: Path) -> None:
        """Store the figures at `path`, tagged with the complete books file; where the stream gave
        up, remove what an earlier rebuild stored."""
        figures = self.finish()
        if figures is None:
            self.path.unlink(missing_ok=True)
            _log.info("%s not stored: %s (pipeline_metrics reads the deltas again)", self.path, self.gave_up)
            return
        table = pa.table(
            [
                [figures.rank_counts],
                [figures.hourly["book_messages"].to_list()],
                [figures.hourly["book_delta_rows"].to_list()],
                [figures.skew_sample_seconds],
            ],
            schema=SCHEMA,
        )
        write_derived(table, self.path, books, _TAG, self.tag)

    def _give_up(self, why: str) -> None:
        self.gave_up = why
        self.waiting.clear()
        self.snapshot_parts.clear()
        self.skew.parts.clear()

    def _count_hours(self, received: np.ndarray, numbers: np.ndarray) -> None:
        """Rows and messages (distinct sequence numbers) per hour of received_time, the first hour
        taking rows before the day and the last rows after it, as `delta_pass` counts them."""
        bounds = self.day_start + NS_PER_HOUR * np.arange(1, HOURS)
        edges = np.concatenate(([0], np.searchsorted(received, bounds), [len(received)]))
        for hour in np.flatnonzero(edges[1:] > edges[:-1]):
            first, stop = edges[hour], edges[hour + 1]
            if hour != self.hour:
                if self.hour >= 0:
                    self.messages[self.hour] = self.hour_messages.changes
                self.hour, self.hour_messages = hour, HourMessages()
            self.rows[hour] += stop - first
            self.hour_messages.add(numbers[first:stop])
            if not self.hour_messages.ascending:
                return self._give_up(f"sequence numbers go down in hour {hour}")

    def _rank(self, final: bool) -> None:
        """Rank the waiting deltas no later than the latest snapshot row or the next announced time
        (every one, when `final`), and drop the snapshot rows no delta to come can rank against."""
        until = self._no_snapshot_row_before()
        while self.waiting:
            received, is_bid, price = self.waiting[0]
            ready = len(received) if final else int(np.searchsorted(received, until, "right"))
            if ready == 0:
                break
            self._rank_rows(received[:ready], is_bid[:ready], price[:ready])
            self.waiting_rows -= ready
            if ready < len(received):
                self.waiting[0] = (received[ready:], is_bid[ready:], price[ready:])
                break
            self.waiting.popleft()
        if self.deltas_ended and not self.waiting:
            self.snapshot_parts.clear()
            self.snapshot_rows = 0
            return
        # A delta at t ranks in the last part starting before t: the parts from the last one
        # starting before the earliest delta to come on are all a later delta needs.
        earliest = self.waiting[0][0][0] if self.waiting else self.last_time
        parts = self.snapshot_parts
        while len(parts) > 1 and parts[1][0][0] < earliest:
            self.snapshot_rows -= len(parts.popleft()[0])

    def _as_announced(self, received: np.ndarray) -> bool:
        """Take each of these rows' times (in order) off the announced ones still to come; whether
        every one was there."""
        for time in received.tolist():
            at = self.next_announced + int(np.searchsorted(self.announced[self.next_announced :], time, "left"))
            if at == len(self.announced) or self.announced[at] != time:
                return False
            self.next_announced = at + 1
        return True

    def _no_snapshot_row_before(self) -> int:
        """A time no snapshot row to come is earlier than: the latest one's, or the next announced
        time still to come (none left: the end of time)."""
        if self.announced is None:
            return self.latest_snapshot
        if self.next_announced == len(self.announced):
            return np.iinfo(np.int64).max
        return int(self.announced[self.next_announced])

    def _rank_rows(self, received: np.ndarray, is_bid: np.ndarray, price: np.ndarray) -> None:
        """Rank deltas in time order against the snapshot parts, each delta in the last part that
        starts before it (the parts come in time order, so the snapshot strictly before the delta
        is in that part); a delta no later than the first part's start has no snapshot before it."""
        parts = self.snapshot_parts
        cuts = np.searchsorted(received, [times[0] for times, _, _ in parts], "right")
        for j, (times, bids, asks) in enumerate(parts):
            first, stop = cuts[j], cuts[j + 1] if j + 1 < len(parts) else len(received)
            if stop > first:
                add_ranks(
                    received[first:stop],
                    is_bid[first:stop],
                    price[first:stop],
                    self.tick,
                    times,
                    bids,
                    asks,
                    self.counts,
                )


def _extra(deltas: Path, tick: Decimal, levels: int, day_start: int, sample_rows: int) -> dict[bytes, bytes]:
    """What the stored pass was made from besides the books: the deltas file (rows and bytes),
    the tick, the books' levels, the day and the sample's size."""
    return {
        b"deltas_rows": str(parquet_io.num_rows(deltas)).encode(),
        b"deltas_bytes": str(deltas.stat().st_size).encode(),
        b"tick": str(tick).encode(),
        b"levels": str(levels).encode(),
        b"day_start": str(day_start).encode(),
        b"sample_rows": str(sample_rows).encode(),
    }


def read_delta_pass(
    path: Path, books: Path, deltas: Path, tick: Decimal, levels: int, day_start: int, sample_rows: int
) -> DeltaPass | None:
    """The pass the rebuild stored for these books and deltas, or None when there is none or it
    was made from other files or figures (the metrics then run the pass)."""
    if not deltas.is_file():
        return None
    table = read_derived(path, books, _TAG, _extra(deltas, tick, levels, day_start, sample_rows))
    if table is None:
        return None
    row = table.to_pylist()[0]
    return DeltaPass(
        row["rank_counts"], hourly_frame(row["book_messages"], row["book_delta_rows"]), row["skew_sample_seconds"]
    )

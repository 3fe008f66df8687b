"""Level rank from the touch of every book-delta row of a day, against the last rebuilt snapshot
before it (the update-frequency-by-rank figures of `microstructure.py`).

A bid row at price p has rank r when r of the snapshot's bid levels are better (higher) than p;
an ask row likewise with lower asks; 0 is at or inside the touch, `levels` (the levels the books
carry) is "deeper". A row with no snapshot before it is unranked. The snapshot is the last one
whose `received_time` is strictly before the row's: an as-of join, done one hour at a time in
bounded memory (an hour of snapshot prices, the last snapshot before the hour and one row group of
deltas) by a small numba kernel over int64 ticks, instead of a whole-day SQL as-of join (over
1 GB and 20 s for a realistic day of ~34 M rows).

The same pass draws the day's clock-skew sample (`received_time - origin_time` of evenly spaced
rows), which DuckDB's reservoir sample took a scan of its own for: 0.4-0.8 s of the bench day's
metrics step against 0.27 s for decoding `origin_time` here (every row: the column is
delta-encoded, so 10,000 rows cost its pages all the same).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import closing
from decimal import Decimal
from pathlib import Path
from typing import NamedTuple

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from numba import njit

from market_pipeline.core.book.fixed_point import grid_steps
from market_pipeline.core.day_clock import HOURS, NS_PER_HOUR
from market_pipeline.core.lake import parquet_io
from market_pipeline.core.read_ahead import read_ahead

NO_LEVEL = -1  # an absent level's ticks in the snapshot ladders (as in the rebuild's buffers)
_NEVER = np.iinfo(np.int64).min  # an absent level as the compares take it: never better


@njit(cache=True, nogil=True, inline="always")
def _price_ticks(price, tick):
    """A delta's price in ticks as the ranks compare it: rounded half away from zero (prices are
    positive), as `floor(price / tick + 0.5)` in float64; 0 for NaN."""
    steps = np.floor(price / tick + 0.5)
    return np.int64(steps) if steps == steps else 0


@njit(cache=True, nogil=True)
def add_ranks(delta_time, delta_is_bid, delta_price, tick, snap_time, snap_bid, snap_ask, counts):
    """counts[rank] += 1 for every delta row with a snapshot before it (`snap_time` sorted; the
    ladders `snap_bid`, `snap_ask` are (levels, snapshots) ticks, NO_LEVEL where absent).

    The rows come mostly in time order, so the snapshot before a row is found by stepping on
    from the previous row's (a binary search when time goes back), and its levels are copied out
    once for the rows that rank against it. The rank is counted over every level of the row's
    side, picked by index rather than by a branch (an absent level never counts): vector
    compares, where a loop that stopped at the first level not better mispredicted its exit and
    the side about once a row (1.9x slower on an hour of the bench day); counting both sides and
    picking one after took 1.2x as long as this.
    """
    levels = snap_bid.shape[0]
    # The snapshot's levels as "better than q" compares, one row a side: bids as they are, asks
    # negated (an ask below p is a negated ask above -p), absent levels never better.
    better = np.empty((2, levels), np.int64)
    k = -1
    loaded = -1
    for i in range(delta_time.shape[0]):
        t = delta_time[i]
        if i > 0 and t >= delta_time[i - 1]:
            while k + 1 < snap_time.shape[0] and snap_time[k + 1] < t:
                k += 1
        else:
            k = np.searchsorted(snap_time, t) - 1  # the last snapshot strictly before
        if k < 0:
            continue
        if k != loaded:
            for level in range(levels):
                better[0, level] = snap_bid[level, k] if snap_bid[level, k] != NO_LEVEL else _NEVER
                better[1, level] = -snap_ask[level, k] if snap_ask[level, k] != NO_LEVEL else _NEVER
            loaded = k
        side = 0 if delta_is_bid[i] else 1
        q = _price_ticks(delta_price[i], tick) * (1 - 2 * side)
        rank = 0
        for level in range(levels):
            rank += better[side, level] > q
        counts[min(rank, levels)] += 1


@njit(cache=True, nogil=True)
def _prices_ticks(prices, tick, out):
    """`_price_ticks` of each price into `out`, NO_LEVEL where NaN (a null read as NaN)."""
    for i in range(prices.shape[0]):
        out[i] = _price_ticks(prices[i], tick) if prices[i] == prices[i] else NO_LEVEL


@njit(cache=True, nogil=True)
def count_changes(values, changes, last, started):
    """`changes` plus the values that differ from the one before them (the first from `last`
    when `started`), with the new last value and started, and whether the values never went down
    (from `last` on): (changes, last, started, ascending). Over ascending numbers, the changes
    are the distinct numbers."""
    ascending = True
    for v in values:
        if not started or v != last:
            changes += 1
            if started and v < last:
                ascending = False
        last, started = v, True
    return changes, last, started, ascending


class HourMessages:
    """count(DISTINCT sequence_number) of an hour's rows (as SQL: NULL is no number), part by part,
    counted as changes while the numbers never go down (a lake's deltas in file order): 0.02 s
    over the bench day against 0.22 s for polars' unique per part and n_unique of their union.
    When they do go down somewhere, `count` takes polars' n_unique over the hour, read again (the
    pass); `delta_pass_stream` gives up instead."""

    def __init__(self) -> None:
        self.changes, self.last, self.started, self.ascending = 0, 0, False, True

    def add(self, numbers: np.ndarray) -> None:
        """The next part's sequence numbers, nulls left out."""
        if self.ascending:
            self.changes, self.last, self.started, self.ascending = count_changes(
                numbers, self.changes, self.last, self.started
            )

    def count(self, deltas: Path, inside: pl.Expr) -> int:
        if self.ascending:
            return self.changes
        hour = parquet_io.scan(deltas).filter(inside).select(pl.col("sequence_number").drop_nulls().n_unique())
        return int(hour.collect(engine="streaming").item())


def _ladder_ticks(column: pa.ChunkedArray, tick: Decimal) -> np.ndarray:
    """One level's prices in ticks as a delta's are taken (`_price_ticks`), NO_LEVEL where there is
    none. A decimal column on the tick grid (the rebuilt books always are) is divided in integers,
    its unscaled values over the tick's: the float rule gives the same integers there (its
    quotient is within a few ulps of one, far from a half). Any other column takes the float rule
    on its values as polars reads them as floats."""
    array = column.combine_chunks()
    ticks = grid_steps(array, tick)
    if ticks is not None:
        return np.where(np.asarray(array.is_valid()), ticks, NO_LEVEL) if array.null_count else ticks
    values = pl.from_arrow(array).cast(pl.Float64).to_numpy()  # type: ignore[union-attr]
    out = np.empty(len(values), np.int64)
    _prices_ticks(values, float(tick), out)
    return out


def _row_group_spans(reader: pq.ParquetFile) -> list[tuple[int | None, int | None]]:
    """(min, max) received_time of each row group from the footer; None where not recorded."""
    column = reader.schema_arrow.get_field_index("received_time")
    spans = []
    for group in range(reader.num_row_groups):
        stats = reader.metadata.row_group(group).column(column).statistics
        spans.append((stats.min, stats.max) if stats is not None and stats.has_min_max else (None, None))
    return spans


def _meets(span: tuple[int | None, int | None], low: int | None, high: int | None) -> bool:
    """Whether a row group's footer range of received_time meets [low, high) (None: unbounded);
    a group without a recorded range meets every window."""
    first, last = span
    return first is None or ((high is None or first < high) and (low is None or last >= low))


class Ladders(NamedTuple):
    """Snapshot rows as the rank kernel takes them: received_time, and the bid and ask prices in
    ticks (absent levels NO_LEVEL), one (levels, rows) array a side."""

    times: np.ndarray
    bids: np.ndarray
    asks: np.ndarray

    def last(self) -> Ladders:
        """The last row, copied (a view would keep the whole hour's arrays alive)."""
        return Ladders(self.times[-1:].copy(), self.bids[:, -1:].copy(), self.asks[:, -1:].copy())


class HourLadders(NamedTuple):
    """An hour's snapshot rows, stably sorted by time (as the whole-day as-of join orders them),
    behind a first row left free for the last snapshot of the hours before: every one of them is
    earlier than the hour, so it goes first without copying the hour's rows behind it."""

    spare: Ladders

    def after(self, carried: Ladders | None) -> Ladders:
        """The rows to rank the hour's deltas against: `carried` (if any), then the hour's."""
        times, bids, asks = self.spare
        if carried is None:
            # Copied (the hours before the day's first snapshot, usually one): a view would not be
            # C-contiguous, and numba would compile the kernel once more for it.
            return Ladders(times[1:], np.ascontiguousarray(bids[:, 1:]), np.ascontiguousarray(asks[:, 1:]))
        times[0], bids[:, 0], asks[:, 0] = carried.times[0], carried.bids[:, 0], carried.asks[:, 0]
        return self.spare


def _hour_snapshots(
    reader: pq.ParquetFile, spans: list, low: int | None, high: int | None, tick: Decimal, levels: int
) -> HourLadders:
    """The vendor-snapshot rows with low <= received_time < high (None: unbounded). Only the row
    groups whose footer range meets the window are read, through pyarrow (which decodes decimals
    several times faster than polars)."""
    prices = [f"{side}_{i}_price" for side in ("bid", "ask") for i in range(levels)]
    groups = [g for g, span in enumerate(spans) if _meets(span, low, high)]
    table = reader.read_row_groups(groups, columns=["received_time", "trigger", *prices])
    keep = pc.equal(table["trigger"], "snapshot")
    if low is not None:
        keep = pc.and_(keep, pc.greater_equal(table["received_time"], low))
    if high is not None:
        keep = pc.and_(keep, pc.less(table["received_time"], high))
    table = table.filter(keep)
    times = table["received_time"].to_numpy().astype(np.int64, copy=False)
    order = np.argsort(times, kind="stable") if np.any(times[1:] < times[:-1]) else None
    rows = len(times) + 1
    spare = Ladders(np.empty(rows, np.int64), np.empty((levels, rows), np.int64), np.empty((levels, rows), np.int64))
    spare.times[1:] = times if order is None else times[order]
    for ladder, side in ((spare.bids, "bid"), (spare.asks, "ask")):
        for i in range(levels):
            ticks = _ladder_ticks(table[f"{side}_{i}_price"], tick)
            ladder[i, 1:] = ticks if order is None else ticks[order]
    return HourLadders(spare)


def _snapshots_by_hour(
    books: Path, windows: list[tuple[int | None, int | None]], tick: Decimal, levels: int
) -> Iterator[HourLadders]:
    """`_hour_snapshots` of each (low, high) window of the books file, in turn."""
    with parquet_io.open_file(books, pre_buffer=False) as reader:
        spans = _row_group_spans(reader)
        for low, high in windows:
            yield _hour_snapshots(reader, spans, low, high, tick, levels)


class DeltaPass(NamedTuple):
    """What the one pass over a day's deltas gives the metrics."""

    rank_counts: list[int]  # delta rows by rank 0..levels (the last entry is "deeper"), unranked left out
    hourly: pl.DataFrame  # hour 0-23, book_messages (distinct sequence numbers), book_delta_rows
    skew_sample_seconds: list[float]  # (received_time - origin_time) / 1e9 of evenly spaced rows


HOURLY_SCHEMA = {"hour": pl.Int64, "book_messages": pl.Int64, "book_delta_rows": pl.Int64}


def hourly_frame(messages: Sequence[int] | np.ndarray, rows: Sequence[int] | np.ndarray) -> pl.DataFrame:
    """`DeltaPass.hourly`: hours 0-23 with their messages and delta rows."""
    return pl.DataFrame(
        {"hour": range(HOURS), "book_messages": messages, "book_delta_rows": rows}, schema=HOURLY_SCHEMA
    )


def sample_positions(rows: int, size: int) -> np.ndarray:
    """`min(size, rows)` positions spread evenly over `rows` (floor(j * rows / size)), ascending."""
    if rows <= size:
        return np.arange(rows, dtype=np.int64)
    return np.arange(size, dtype=np.int64) * rows // size


class SkewSample:
    """The clock-skew sample drawn as the rows pass, part by part: `(received_time - origin_time)
    / 1e9` of the rows at `sample_positions(rows, size)`, counted in the order the parts come."""

    def __init__(self, rows: int, size: int) -> None:
        self.positions = sample_positions(rows, size)
        self.passed = 0  # rows of the parts so far
        self.parts: list[np.ndarray] = []

    def add(self, received: np.ndarray, origin: np.ndarray) -> None:
        start = self.passed
        self.passed += len(received)
        chosen = self.positions[np.searchsorted(self.positions, start) : np.searchsorted(self.positions, self.passed)]
        if len(chosen):
            # As SQL's (received_time - origin_time) / 1e9: the integer difference, then a double division.
            self.parts.append((received[chosen - start] - origin[chosen - start]).astype(np.float64) / 1e9)

    def seconds(self) -> list[float]:
        return np.concatenate(self.parts).tolist() if self.parts else []


class _DeltaGroups:
    """The deltas file as the rank pass reads it, window by window: the columns it ranks and
    samples, one row group at a time, each read once (a group across two hours stays for the
    next) and the next one read on a helper thread meanwhile (pyarrow lets go of the GIL)."""

    COLUMNS = ["received_time", "origin_time", "sequence_number", "side_is_bid", "price"]

    def __init__(self, reader: pq.ParquetFile, windows: list[tuple[int | None, int | None]]):
        self.reader, self.windows = reader, windows
        self.spans = _row_group_spans(reader)
        self._plan = [[g for g, span in enumerate(self.spans) if _meets(span, *w)] for w in windows]
        wanted = [g for groups in self._plan for g in groups]
        reads = [g for i, g in enumerate(wanted) if not i or g != wanted[i - 1]]
        self._frames = read_ahead((self._read(g) for g in reads), "rank-deltas")
        self._current: tuple[int, pl.DataFrame] | None = None

    def rows(self, window: int) -> Iterator[pl.DataFrame]:
        """The rows of window `window` (low <= received_time < high, None: unbounded) in file
        order, a row group's at a time."""
        low, high = self.windows[window]
        inside = self.inside(window)
        for group in self._plan[window]:
            if self._current is None or self._current[0] != group:
                self._current = None  # freed before the next group is taken
                self._current = (group, next(self._frames))
            first, last = self.spans[group]
            whole = first is not None and (low is None or first >= low) and (high is None or last < high)
            yield self._current[1] if whole else self._current[1].filter(inside)

    def inside(self, window: int) -> pl.Expr:
        """Whether a row's received_time is in window `window`."""
        low, high = self.windows[window]
        inside = pl.lit(True)
        if low is not None:
            inside = inside & (pl.col("received_time") >= low)
        if high is not None:
            inside = inside & (pl.col("received_time") < high)
        return inside

    def close(self) -> None:
        self._frames.close()

    def _read(self, group: int) -> pl.DataFrame:
        frame = pl.from_arrow(self.reader.read_row_group(group, columns=self.COLUMNS))
        assert isinstance(frame, pl.DataFrame)
        return frame


def delta_pass(
    books: Path, deltas: Path, tick: Decimal, levels: int, day_start: int, skew_sample_rows: int
) -> DeltaPass:
    """The update ranks, the messages and rows per hour and the skew sample (`skew_sample_rows`
    rows at most) of a day, from one pass over the deltas' received_time, origin_time,
    sequence_number, side and price.

    Rows stamped before the day count in the first hour, rows after it in the last. The sample's
    positions count the rows in the pass's order: hour by hour, in file order within an hour.
    The deltas are read a row group at a time, not an hour at a time: at twice the bench day, an
    hour's rows (2.8 M) and the groups decoded for them made this pass the Tardis graph's peak
    (856 MB; 814-819 MB so). With the next group read ahead, the bench day's pass took 0.97-1.04 s
    against 1.05-1.11 s an hour at a time.
    """
    counts = np.zeros(levels + 1, np.int64)
    skew = SkewSample(parquet_io.num_rows(deltas), skew_sample_rows)
    windows = [
        (
            day_start + hour * NS_PER_HOUR if hour else None,
            day_start + (hour + 1) * NS_PER_HOUR if hour < HOURS - 1 else None,
        )
        for hour in range(HOURS)
    ]
    messages_per_hour, rows_per_hour = [], []
    # The next hour's snapshots are read on a thread while this hour's deltas are read and ranked
    # (pyarrow, polars and the kernel let go of the GIL): an hour of snapshots ahead.
    with (
        closing(read_ahead(_snapshots_by_hour(books, windows, tick, levels), "rank-snapshots")) as hour_snapshots,
        parquet_io.open_file(deltas, pre_buffer=False) as reader,
        closing(_DeltaGroups(reader, windows)) as groups,
    ):
        carried: Ladders | None = None  # the last snapshot before the hour
        for hour, hour_snaps in enumerate(hour_snapshots):
            snaps = hour_snaps.after(carried)
            if snaps.times.size:  # else no snapshot yet: every row of the hour is unranked
                carried = snaps.last()
            messages, rows = HourMessages(), 0
            for part in groups.rows(hour):
                messages.add(part["sequence_number"].drop_nulls().to_numpy())
                received = part["received_time"].to_numpy()
                skew.add(received, part["origin_time"].to_numpy())
                rows += len(received)
                if snaps.times.size:
                    add_ranks(
                        received,
                        part["side_is_bid"].to_numpy(),
                        part["price"].to_numpy(),
                        float(tick),
                        snaps.times,
                        snaps.bids,
                        snaps.asks,
                        counts,
                    )
            messages_per_hour.append(messages.count(deltas, groups.inside(hour)))
            rows_per_hour.append(rows)
    return DeltaPass(counts.tolist(), hourly_frame(messages_per_hour, rows_per_hour), skew.seconds())

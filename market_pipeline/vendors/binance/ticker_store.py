"""A capture's bookTickers for the replay's oracle: sorted by u on disk, read in windows of u.

The replay checks a bookTicker when the diff with its u is applied (`ticker_check`), and the
diffs one `replay_capture` run applies are that run's (those still buffered for a snapshot
included): only tickers whose u lies between the run's lowest and highest final u can be checked
in it. So the tickers (the previous day's pending ones first, then the day's in capture line
order: that position is a ticker's `row`, the index `first_mismatch_ticker` reports) are put on
the grid once, batch by batch, into a scratch file sorted by (u, row): as they come when u only
rises along the lines (one connection's stream), else sorted by DuckDB under its memory limit (it
spills beyond it). Each run gets the slice of its range of u from a span of row groups read together.

A recorded bookTicker stream sends hundreds a second, tens of millions a busy day: held whole at
~64 bytes each that is gigabytes; this way a rebuild holds a span of row groups (6 MB) or a window.
"""

from __future__ import annotations

import bisect
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from market_pipeline.core.book import delta_replay as lr
from market_pipeline.core.lake import parquet_io
from market_pipeline.core.lake.batches import iter_tables
from market_pipeline.core.lake.files import remove_dead_owners_dirs
from market_pipeline.core.lake.schemas import PRICE_COLUMNS
from market_pipeline.vendors.binance import sync_kernel as br

TICKER_COLUMNS = ["received_time", "update_id", "bid_price", "bid_size", "ask_price", "ask_size"]
STEP_COLUMNS = ("bid_price", "bid_size", "ask_price", "ask_size")  # in the sorted file's order
SCRATCH_PREFIX = "capture-tickers-"  # <prefix><pid>-<random>: a directory a sort
_SORTED_FILE = "tickers_by_u.parquet"
# Tickers put on the grid at a time, and a row group of the sorted file: 3 MB of int64 columns.
BATCH_ROWS = 65_536
# Row groups a span of windows holds (6 MB), read in one call; a window is a slice of it. On the
# bench's every-top capture (4.0 M tickers, 66 row groups, 88 runs) the windows took 0.27-0.29 s of
# the book step's main thread, against 0.5 s when each window was its row groups read one by one
# and copied together (9.4 M tickers copied). 4 row groups: 0.22 s, but verify-capture's peak RSS
# 20-30 MB higher (644-655 MB against 622-633).
SPAN_GROUPS = 2
SORT_MEMORY_LIMIT = "256MB"  # DuckDB's own budget for the sort; it spills beyond it
_SORTED = pa.schema(
    [
        ("u", pa.int64()),
        ("row", pa.int64()),
        ("bid_tick", pa.int64()),
        ("bid_lot", pa.int64()),
        ("ask_tick", pa.int64()),
        ("ask_lot", pa.int64()),
    ]
)
# Scratch read once or twice: the time of compressing and of dictionaries is not paid back.
SCRATCH_OPTIONS = {"compression": "none", "use_dictionary": False}

# (float64 values, their column in TICKER_COLUMNS, row of the first value, update ids) -> steps:
# ticks for the prices, lots for the sizes (as `delta_batches.diff_arrays` takes them).
ToSteps = Callable[[np.ndarray, str, int, np.ndarray], np.ndarray]
# (received_time, bid tick, ask tick) of a batch of the day's tickers, in line order.
DayTops = Callable[[np.ndarray, np.ndarray, np.ndarray], None]


def no_tickers() -> br.Tickers:
    """An empty window (read-only like the others: one specialization of the replay kernel)."""
    none = lr.read_only(np.empty(0, np.int64))
    return br.Tickers(*[none] * len(br.Tickers._fields))


def sort_tickers(
    carried: Path | None,
    day: Path,
    spill_dir: Path | None,
    ticks: ToSteps,
    lots: ToSteps,
    day_tops: DayTops | None = None,
) -> TickerWindows:
    """The tickers of `carried` (a pending file, in its order) then of `day` (a `book_ticker`
    file with `line_no`), on the grid (`ticks`, `lots`), sorted into a scratch directory of their own
    under `spill_dir` (the system's temporary directory when None), which `TickerWindows.close`
    removes (those of killed processes go at the next sort); `day_tops` is handed each batch of
    the day's tops."""
    parent = Path(tempfile.gettempdir()) if spill_dir is None else spill_dir
    parent.mkdir(parents=True, exist_ok=True)
    remove_dead_owners_dirs(parent, SCRATCH_PREFIX)
    scratch = Path(tempfile.mkdtemp(prefix=f"{SCRATCH_PREFIX}{os.getpid()}-", dir=parent))
    try:
        count = _sorted_file(carried, day, scratch, ticks, lots, day_tops)
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    return TickerWindows(scratch, count)


def _sorted_file(
    carried: Path | None, day: Path, scratch: Path, ticks: ToSteps, lots: ToSteps, day_tops: DayTops | None
) -> int:
    """Write the sorted file into `scratch`; the number of tickers."""
    by_line, by_u = scratch / "tickers_by_line.parquet", scratch / _SORTED_FILE
    row, u_rising = 0, _Rising()
    with parquet_io.parquet_writer(by_line, _SORTED, **SCRATCH_OPTIONS) as writer:  # a row group a batch
        sources = [(carried, False)] if carried is not None else []
        for path, of_day in [*sources, (day, True)]:
            tables = (
                _line_ordered(path, scratch) if of_day else iter_tables(parquet_io.open_file(path), None, BATCH_ROWS)
            )
            for table in tables:
                if not table.num_rows:  # an empty row group (a chunk without tickers) has no u range
                    continue
                batch = _on_grid(table, row, ticks, lots)
                u_rising.add(batch.column("u").to_numpy())
                writer.write_table(batch)
                if of_day and day_tops is not None:
                    received = table.column("received_time").to_numpy().astype(np.int64, copy=False)
                    day_tops(received, *(batch.column(name).to_numpy() for name in ("bid_tick", "ask_tick")))
                row += batch.num_rows
    if u_rising.holds:  # line order is (u, row) order, as one connection's bookTickers come
        by_line.rename(by_u)
        return row
    query = f"SELECT * FROM {parquet_io.duckdb_read_parquet(str(by_line))} ORDER BY u, row"
    with _duckdb(scratch) as con, parquet_io.parquet_writer(by_u, _SORTED, **SCRATCH_OPTIONS) as writer:
        for batch in con.execute(query).to_arrow_reader(BATCH_ROWS):
            if batch.num_rows:
                writer.write_batch(batch)
    by_line.unlink()
    return row


def _duckdb(scratch: Path):
    return parquet_io.scratch_duckdb(scratch, SORT_MEMORY_LIMIT)


class _Rising:
    """Whether the values added, batch after batch, never go down."""

    def __init__(self) -> None:
        self.holds = True
        self._last: int | None = None

    def add(self, values: np.ndarray) -> None:
        if self.holds and len(values):
            self.holds = (self._last is None or values[0] >= self._last) and bool(np.all(values[1:] >= values[:-1]))
            self._last = int(values[-1])


def _line_ordered(path: Path, scratch: Path) -> Iterator[pa.Table]:
    """The day's tickers in capture line order (file order among equal `line_no`), in batches:
    as stored when they are (the capture source writes them so), else sorted by DuckDB."""
    present = parquet_io.read_schema(path).names
    missing = [c for c in [*TICKER_COLUMNS, "line_no"] if c not in present]
    if missing:
        raise ValueError(
            f"{path}: book_ticker lacks column(s) {missing}; the Binance rebuild needs partitions "
            "written from captures (PIPELINE_SOURCE=capture)"
        )
    lines = _Rising()
    for table in iter_tables(parquet_io.open_file(path), ["line_no"], 8 * BATCH_ROWS):
        lines.add(table.column("line_no").to_numpy())
    if lines.holds:
        yield from iter_tables(parquet_io.open_file(path), TICKER_COLUMNS, BATCH_ROWS)
        return
    source = parquet_io.duckdb_read_parquet(path, file_row_number="true")
    query = f"SELECT {', '.join(TICKER_COLUMNS)} FROM {source} ORDER BY line_no, file_row_number"
    with _duckdb(scratch) as con:
        for batch in con.execute(query).to_arrow_reader(BATCH_ROWS):
            yield pa.Table.from_batches([batch])


def _on_grid(table: pa.Table, first_row: int, ticks: ToSteps, lots: ToSteps) -> pa.Table:
    u = table.column("update_id").to_numpy().astype(np.int64, copy=False)
    steps = [
        (ticks if name in PRICE_COLUMNS else lots)(
            pc.cast(table.column(name), pa.float64()).to_numpy(), name, first_row, u
        )
        for name in STEP_COLUMNS
    ]
    rows = np.arange(first_row, first_row + table.num_rows, dtype=np.int64)
    return pa.Table.from_arrays([u, rows, *steps], schema=_SORTED)


class TickerWindows:
    """The sorted tickers (`sort_tickers`), read in windows of u. The row groups are read into one
    contiguous span (`SPAN_GROUPS` of them from a window's first, or as many as the window needs)
    and a window is a slice of it; the span is read again, from the window's first row group, when
    a window leaves it (the runs' ranges mostly rise). A context manager: its scratch goes at exit."""

    def __init__(self, scratch: Path, count: int) -> None:
        self.scratch = scratch
        self.count = count  # tickers, carried ones included
        self._file = parquet_io.open_file(scratch / _SORTED_FILE)
        metadata = self._file.metadata
        u_column = _SORTED.get_field_index("u")
        stats = [metadata.row_group(g).column(u_column).statistics for g in range(metadata.num_row_groups)]
        self._lowest = [int(s.min) for s in stats]  # rising: the file is sorted by u
        self._highest = [int(s.max) for s in stats]
        self._span_first = self._span_end = 0  # the span holds row groups [first, end)
        self._span = no_tickers()

    def for_run(self, run: br.CaptureRun) -> br.Tickers:
        """The window of the tickers a run's diffs can meet: from their lowest final u to their highest."""
        final_u = run.diffs.last_u
        return self.window(int(final_u.min()), int(final_u.max())) if len(final_u) else no_tickers()

    def window(self, lo: int, hi: int) -> br.Tickers:
        """Every ticker with lo <= u <= hi, sorted by (u, row): views of the span."""
        if hi < lo:
            return no_tickers()
        first = bisect.bisect_left(self._highest, lo)
        end = bisect.bisect_right(self._lowest, hi)
        if first >= end:
            return no_tickers()
        if not self._span_first <= first < end <= self._span_end:
            self._read_span(first, max(end, min(first + SPAN_GROUPS, len(self._lowest))))
        u = self._span.u_sorted
        start, stop = int(np.searchsorted(u, lo, "left")), int(np.searchsorted(u, hi, "right"))
        return br.Tickers(*(column[start:stop] for column in self._span))

    def _read_span(self, first: int, end: int) -> None:
        """Make the span row groups [first, end), read in one call: each call into Arrow lets the
        helper threads take the GIL, which this thread, the replay's, then waits for."""
        table = self._file.read_row_groups(list(range(first, end)))
        self._span = br.Tickers(*(lr.read_only(table.column(name).to_numpy()) for name in _SORTED.names))
        self._span_first, self._span_end = first, end

    def close(self) -> None:
        self._span = no_tickers()
        self._file.close()
        shutil.rmtree(self.scratch, ignore_errors=True)

    def __enter__(self) -> TickerWindows:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

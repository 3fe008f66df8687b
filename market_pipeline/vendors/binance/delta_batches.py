"""A capture day's `book_delta_v2` in batches of whole diff messages, as `sync_kernel` arrays.

The capture rebuild and verify-capture replay deltas batch by batch (`DELTA_BATCH_ROWS` rows, a
message never cut: its rows share `line_no`), so their memory is set by the batch size, not by the
day. `sync_carry.carry_out` / `resume` join the batches as they join two days: the diffs still
buffered for a REST snapshot at a batch's end go in front of the next batch.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np
import polars as pl

from market_pipeline.core.lake import parquet_io
from market_pipeline.core.lake.batches import iter_tables, message_aligned
from market_pipeline.vendors.binance import sync_carry as sc
from market_pipeline.vendors.binance import sync_kernel as br

# Level rows replayed at a time: ~70 MB of columns and their int64 tick/lot copies.
DELTA_BATCH_ROWS = 500_000
DELTA_COLUMNS = [
    "origin_time",
    "received_time",
    "sequence_number",
    "first_update_id",
    "prev_update_id",
    "side_is_bid",
    "price",
    "size",
    "line_no",
]
# (float64 values, sequence_number of each row) -> int64 steps of the grid.
ToSteps = Callable[[np.ndarray, np.ndarray], np.ndarray]


def message_groups(line_no: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows of one message share a line number: (first row of each message, its line, end row)."""
    if not len(line_no):
        empty = np.empty(0, np.int64)
        return empty, empty, empty
    starts = np.flatnonzero(np.r_[True, line_no[1:] != line_no[:-1]])
    ends = np.r_[starts[1:], len(line_no)]
    return starts, line_no[starts], ends


def read_delta_batches(path: Path, batch_rows: int | None = None) -> Iterator[pl.DataFrame]:
    """`book_delta_v2` of a capture partition in line order, in batches of whole messages."""
    missing = [c for c in DELTA_COLUMNS if c not in parquet_io.read_schema(path).names]
    if missing:
        raise ValueError(
            f"{path}: book_delta_v2 lacks column(s) {missing}; the Binance rebuild needs partitions "
            "written from captures (PIPELINE_SOURCE=capture)"
        )
    tables = iter_tables(parquet_io.open_file(path), DELTA_COLUMNS, batch_rows or DELTA_BATCH_ROWS)
    last_line = -1
    for frame in message_aligned(pl.from_arrow(table) for table in tables):
        line_no = frame.get_column("line_no")
        if line_no[0] <= last_line or not line_no.is_sorted():
            raise ValueError(f"{path}: book_delta_v2 rows are not in capture line order (line_no)")
        last_line = line_no[-1]
        yield frame


def delta_pass_columns(frame: pl.DataFrame) -> dict[str, np.ndarray]:
    """The columns of a batch the metrics' pass reads (`book_writer.DeltaPassSink.deltas`), as
    the pass reads them from the file (`update_ranks.delta_pass`)."""
    names = {
        "recv": "received_time",
        "orig": "origin_time",
        "seq": "sequence_number",
        "is_bid": "side_is_bid",
        "price": "price",
    }
    return {key: frame.get_column(name).to_numpy() for key, name in names.items()}


def diff_arrays(frame: pl.DataFrame, ticks: ToSteps, lots: ToSteps) -> tuple[br.CaptureDiffs, br.LevelRows]:
    """The diff messages of a batch (one entry each) and their level rows on the grid."""

    def column(name: str, dtype) -> np.ndarray:
        return frame.get_column(name).to_numpy().astype(dtype, copy=False)

    start, line, end = message_groups(column("line_no", np.int64))
    seq_rows = column("sequence_number", np.int64)
    prev = frame.get_column("prev_update_id").fill_null(-1).to_numpy().astype(np.int64)
    diffs = br.CaptureDiffs(
        line,
        column("first_update_id", np.int64)[start],
        seq_rows[start],
        prev[start],
        start,
        end,
        column("received_time", np.int64)[start],
        column("origin_time", np.int64)[start],
    )
    rows = br.LevelRows(
        column("side_is_bid", np.bool_),
        ticks(column("price", np.float64), seq_rows),
        lots(column("size", np.float64), seq_rows),
    )
    return diffs, rows


class BatchedReplay:
    """One capture part (a day, or a whole capture) replayed batch by batch in line order.

    `runs` yields, for each batch of diffs and then once more with none (for the snapshots after
    the last diff), the `sync_kernel.CaptureRun` of one `replay_capture` call: the batch's diffs
    with those still buffered for a snapshot in front (`resume`), their level rows, the REST
    snapshots written before the batch's last diff, and a cursor. After each run the diffs still
    buffered are carried to the next batch; at the end `last_run` (for `sync_kernel.finish`) and
    `carry` (the part's carry out) are those of the last run.
    """

    def __init__(self, snapshots: br.DepthSnapshots, sync: np.ndarray, carry: sc.SyncCarry | None) -> None:
        self.snapshots = snapshots
        self.sync = sync  # the record the runs update
        self.carry = carry  # the previous part's, then the one after each run
        self.last_run: br.CaptureRun | None = None

    def runs(self, batches: Iterable[tuple[br.CaptureDiffs, br.LevelRows]]) -> Iterator[br.CaptureRun]:
        next_snapshot = 0
        for batch in itertools.chain(batches, [None]):
            own_diffs, own_rows = _NO_DIFFS if batch is None else batch
            if self.carry is None or not len(self.carry.diffs.line):  # nothing buffered: no copy of the batch
                diffs, rows, cursor = own_diffs, own_rows, br.new_cursor()
            else:
                diffs, rows, cursor = sc.resume(self.carry, own_diffs, own_rows)
            last_line = None if batch is None or not len(own_diffs.line) else int(own_diffs.line[-1])
            snapshots, next_snapshot = snapshots_before(self.snapshots, next_snapshot, last_line)
            run = br.CaptureRun(diffs, rows, snapshots, cursor)
            yield run
            self.carry = sc.carry_out(self.sync, cursor, diffs, rows)
            self.last_run = run


_NONE = np.empty(0, np.int64)
_NO_DIFFS = (
    br.CaptureDiffs(*[_NONE] * len(br.CaptureDiffs._fields)),
    br.LevelRows(_NONE.astype(np.bool_), _NONE, _NONE),
)


def snapshots_before(snapshots: br.DepthSnapshots, first: int, line: int | None) -> tuple[br.DepthSnapshots, int]:
    """The REST snapshots from index `first` whose line is before `line` (None: all the rest), and
    the index after them. Their level rows stay indexed in the whole table."""
    end = len(snapshots.line) if line is None else int(np.searchsorted(snapshots.line, line))
    end = max(end, first)
    return br.DepthSnapshots(*(column[first:end] for column in snapshots)), end

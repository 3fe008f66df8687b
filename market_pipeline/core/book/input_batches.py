"""The rebuild's input, batch by batch: raw delta and snapshot Parquet batches converted to int64
ticks and lots (`fixed_point`), as dicts of numpy arrays the kernel's named tuples wrap, and the
few operations the driver carries them over batches with (concatenate, drop the consumed head).

Deltas: recv, orig, seq, is_bid, tick, lot, is_snapshot, breaks_chain (one row each; breaks_chain
empty when the file carries no update-id chain). Snapshots: recv, orig, seq, and bt, bl, at, al as
(rows, depth) matrices; an absent level has tick -1 and lot 0.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import partial

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from market_pipeline.core.book import delta_replay as lr
from market_pipeline.core.book.fixed_point import Grid, PrecisionCounter
from market_pipeline.core.book.stage_timings import StageTimings
from market_pipeline.core.reused_arrays import ReusedArrays
from market_pipeline.core.telemetry import progress
from market_pipeline.core.update_chain import ChainCarry, has_chain, message_breaks

# Read too when a file has it (OPTIONAL_COLUMNS of book_delta_v2): rows of full-book snapshot messages.
SNAPSHOT_FLAG_COLUMN = "is_snapshot"
# Buffers a reader keeps for the arrays it converts into (`ReusedArrays`): enough for the batches
# alive at once (the kernel's, the one read ahead, and the ones the delta pass still ranks).
DELTA_BUFFERS = 8  # ticks and lots: two a batch
SNAPSHOT_BUFFERS = 12  # four level matrices a batch


def _numpy_column(batch: pa.RecordBatch | pa.Table, name: str, dtype) -> np.ndarray:
    column = batch.column(name)
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if column.null_count:
        column = column.fill_null(np.nan if np.issubdtype(dtype, np.floating) else 0)
    return column.to_numpy(zero_copy_only=False).astype(dtype, copy=False)


def delta_batches(
    file: pq.ParquetFile,
    grid: Grid,
    precision: PrecisionCounter,
    timings: StageTimings,
    columns: list[str],
    batch_rows: int,
) -> Iterator[dict[str, np.ndarray]]:
    """The deltas of `columns` of `file`, converted; with the chain's columns among them
    (`update_chain.has_chain`), `breaks_chain` flags each message that breaks the chain."""
    progress.expect(file.metadata.num_rows)
    batches = file.iter_batches(batch_size=batch_rows, columns=columns)
    chain = _ChainBreaks() if has_chain(columns) else None
    arrays = ReusedArrays(DELTA_BUFFERS)
    convert = partial(_convert_deltas, grid=grid, precision=precision, chain=chain, arrays=arrays)
    for converted in _converted(batches, timings, ("read", "convert"), convert):
        progress.advance(len(converted["recv"]))
        yield converted


def snapshot_batches(
    file: pq.ParquetFile, grid: Grid, precision: PrecisionCounter, depth: int, timings: StageTimings, batch_rows: int
) -> Iterator[dict[str, np.ndarray]]:
    arrays = ReusedArrays(SNAPSHOT_BUFFERS)
    convert = partial(_convert_snapshots, grid=grid, precision=precision, depth=depth, arrays=arrays)
    yield from _converted(
        file.iter_batches(batch_size=batch_rows), timings, ("read_snapshots", "convert_snapshots"), convert
    )


def _converted(
    batches: Iterator[pa.RecordBatch],
    timings: StageTimings,
    stages: tuple[str, str],
    convert: Callable[..., dict[str, np.ndarray]],
) -> Iterator[dict[str, np.ndarray]]:
    """`convert(batch, offset=rows before it)` of each batch, reading and converting timed as `stages`."""
    read, converting = stages
    rows = 0
    while True:
        with timings(read):
            batch = next(batches, None)
        if batch is None:
            return
        with timings(converting):
            converted = convert(batch, offset=rows)
        rows += batch.num_rows
        yield converted


class _ChainBreaks:
    """Per row of each batch in turn, whether it starts a message that breaks the update-id chain
    (`update_chain.message_breaks`, the raw check's rule), the last message carried to the next batch."""

    def __init__(self) -> None:
        self.carry = ChainCarry()

    def flags(self, batch: pa.RecordBatch, seq: np.ndarray) -> np.ndarray:
        prev = batch.column("prev_update_id")
        messages = message_breaks(
            _numpy_column(batch, "line_no", np.int64),
            seq,
            _numpy_column(batch, "first_update_id", np.int64),
            _numpy_column(batch, "prev_update_id", np.int64),
            pc.is_valid(prev).to_numpy(zero_copy_only=False),
            self.carry,
        )
        self.carry = messages.carry
        breaks = np.zeros(batch.num_rows, np.bool_)
        breaks[np.flatnonzero(messages.head)[messages.broken]] = True
        return breaks


def _convert_deltas(
    batch: pa.RecordBatch,
    grid: Grid,
    precision: PrecisionCounter,
    offset: int,
    chain: _ChainBreaks | None,
    arrays: ReusedArrays,
) -> dict[str, np.ndarray]:
    seq = _numpy_column(batch, "sequence_number", np.int64)
    price = _numpy_column(batch, "price", np.float64)
    size = _numpy_column(batch, "size", np.float64)
    return {
        "recv": _numpy_column(batch, "received_time", np.int64),
        "orig": _numpy_column(batch, "origin_time", np.int64),
        "seq": seq,
        "is_bid": _numpy_column(batch, "side_is_bid", np.bool_),
        "price": price,  # as read: a `DeltaPassSink` (the metrics' pass) rounds it its own way
        "tick": precision.convert(price, grid.tick, "price", offset, seq, out=arrays.empty(len(price), np.int64)),
        "lot": precision.convert(size, grid.lot, "size", offset, seq, out=arrays.empty(len(size), np.int64)),
        "is_snapshot": (
            _numpy_column(batch, SNAPSHOT_FLAG_COLUMN, np.bool_)
            if SNAPSHOT_FLAG_COLUMN in batch.schema.names
            else lr.no_snapshot_flags(batch.num_rows)
        ),
        "breaks_chain": lr.NO_CHAIN if chain is None else chain.flags(batch, seq),
    }


def _convert_snapshots(
    batch: pa.RecordBatch, grid: Grid, precision: PrecisionCounter, depth: int, offset: int, arrays: ReusedArrays
) -> dict[str, np.ndarray]:
    seq = _numpy_column(batch, "sequence_number", np.int64)
    converted = {}
    for key, side, field_name, step in (
        ("bt", "bid", "price", grid.tick),
        ("bl", "bid", "size", grid.lot),
        ("at", "ask", "price", grid.tick),
        ("al", "ask", "size", grid.lot),
    ):
        matrix = arrays.empty((batch.num_rows, depth), np.int64)
        for level in range(depth):
            column = f"{side}_{level}_{field_name}"
            values = _numpy_column(batch, column, np.float64)
            precision.convert(values, step, f"book.{column}", offset, seq, out=matrix[:, level])
        converted[key] = matrix
    # An absent level (null price) must read as absent on both arrays.
    converted["bl"][converted["bt"] < 0] = 0
    converted["al"][converted["at"] < 0] = 0
    return {
        "recv": _numpy_column(batch, "received_time", np.int64),
        "orig": _numpy_column(batch, "origin_time", np.int64),
        "seq": seq,
        **converted,
    }


def empty_deltas() -> dict[str, np.ndarray]:
    return {
        "recv": np.empty(0, np.int64),
        "orig": np.empty(0, np.int64),
        "seq": np.empty(0, np.int64),
        "is_bid": np.empty(0, np.bool_),
        "price": np.empty(0, np.float64),
        "tick": np.empty(0, np.int64),
        "lot": np.empty(0, np.int64),
        "is_snapshot": np.empty(0, np.bool_),
        "breaks_chain": lr.NO_CHAIN,
    }


def empty_snapshots(depth: int) -> dict[str, np.ndarray]:
    return {
        "recv": np.empty(0, np.int64),
        "orig": np.empty(0, np.int64),
        "seq": np.empty(0, np.int64),
        **{key: np.empty((0, depth), np.int64) for key in ("bt", "bl", "at", "al")},
    }


def concat(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    if not len(a["recv"]):
        return b
    return {key: np.concatenate([a[key], b[key]]) for key in a}


def message_end(d: dict[str, np.ndarray], recv: int, seq: int) -> int:
    """How many leading rows of `d` belong to the message (`recv`, `seq`).

    Looked for in windows that double from 64 rows: a message is a few rows, and comparing the
    whole batch (500,000 rows, 68 times over the bench day) cost the kernel's thread ~0.1 s."""
    rows, start, size = len(d["recv"]), 0, 64
    while start < rows:
        stop = min(rows, start + size)
        other = (d["recv"][start:stop] != recv) | (d["seq"][start:stop] != seq)
        if other.any():
            return start + int(np.argmax(other))
        start, size = stop, 2 * size
    return rows


def tail(a: dict[str, np.ndarray], start: int) -> dict[str, np.ndarray]:
    # Views: the consumed part of a batch stays alive only until the next `concat` copies the rest.
    return {key: value[start:] for key, value in a.items()} if start else a


def head(a: dict[str, np.ndarray], stop: int) -> dict[str, np.ndarray]:
    return {key: value[:stop] for key, value in a.items()}


def one_message(d: dict[str, np.ndarray]) -> bool:
    """Whether the rows are exactly one message (one received_time and sequence_number)."""
    if not len(d["recv"]):
        return False
    return bool((d["seq"] == d["seq"][0]).all() and (d["recv"] == d["recv"][0]).all())


def leading_below(values: np.ndarray, limit: int) -> int:
    """How many leading values are < limit (the snapshots due before a message with seq = limit)."""
    below = values < limit
    return len(values) if below.all() else int(np.argmin(below))


def first_sequence(deltas_file: pq.ParquetFile) -> int | None:
    for batch in deltas_file.iter_batches(batch_size=1, columns=["sequence_number"]):
        return int(batch.column(0)[0].as_py())
    return None


def as_deltas(d: dict[str, np.ndarray]) -> lr.Deltas:
    recv, orig, seq = (lr.read_only(d[key]) for key in ("recv", "orig", "seq"))  # Arrow's, or concatenated
    return lr.Deltas(recv, orig, seq, d["is_bid"], d["tick"], d["lot"], d["is_snapshot"], d["breaks_chain"])


def as_snapshots(s: dict[str, np.ndarray]) -> lr.Snapshots:
    recv, orig, seq = (lr.read_only(s[key]) for key in ("recv", "orig", "seq"))  # Arrow's, or concatenated
    return lr.Snapshots(recv, orig, seq, s["bt"], s["bl"], s["at"], s["al"])

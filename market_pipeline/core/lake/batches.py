"""Reading a lake Parquet file in bounded batches, in file order: the one way every reader does it.

Memory is set by the batch size, never by the file: `iter_tables` reads row groups up to a batch
at a time (small ones together, large ones sliced), `message_aligned` re-cuts delta batches so none
ends inside a message.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from market_pipeline.core.lake import parquet_io

# Rows per batch: about this many bytes of fixed-width values (a book snapshot row is ~85 columns wide).
BATCH_BYTES = 48 * 1024 * 1024
MIN_BATCH_ROWS = 8_192
# Tables whose rows group into messages: runs of rows sharing (received_time, sequence_number).
MESSAGE_TABLES = frozenset({"book_delta_v2"})


def batch_rows_for(columns: int) -> int:
    """Rows per batch of a table with `columns` columns (BATCH_BYTES of 8-byte values)."""
    return max(MIN_BATCH_ROWS, BATCH_BYTES // (8 * max(1, columns)))


def iter_tables(reader: pq.ParquetFile, columns: list[str] | None, batch_rows: int) -> Iterator[pa.Table]:
    """The file's rows in order, in tables of at most `batch_rows` rows.

    Consecutive row groups that fit in a batch together are read as one (a file written an hour
    a row group holds 24 small ones on a quiet day: each batch costs its readers a fixed price);
    a larger row group is read alone and sliced. `ParquetFile.iter_batches` over the whole file
    holds far more than a batch (~760 MB peak for a 34 M-row delta day, against ~210 MB read a row
    group at a time); a row group larger than 4 x `batch_rows` is streamed in batches on its own.
    """
    metadata = reader.metadata
    held: list[int] = []  # small row groups waiting to be read together
    held_rows = 0
    for group in range(metadata.num_row_groups):
        rows = metadata.row_group(group).num_rows
        if held and held_rows + rows > batch_rows:
            yield reader.read_row_groups(held, columns=columns)
            held, held_rows = [], 0
        if rows <= batch_rows:
            held.append(group)
            held_rows += rows
            continue
        if rows > 4 * batch_rows:
            for batch in reader.iter_batches(batch_size=batch_rows, row_groups=[group], columns=columns):
                yield pa.Table.from_batches([batch])
            continue
        table = reader.read_row_group(group, columns=columns)
        for start in range(0, table.num_rows, batch_rows):
            yield table.slice(start, batch_rows)
    if held:
        yield reader.read_row_groups(held, columns=columns)


def iter_frames(path: Path, columns: list[str] | None = None, batch_rows: int | None = None) -> Iterator[pl.DataFrame]:
    """A lake file's `columns` (None: all) in file order, as polars frames of at most `batch_rows`
    rows (default: `batch_rows_for` the columns read)."""
    reader = parquet_io.open_file(path, pre_buffer=False)
    rows = batch_rows or batch_rows_for(len(columns) if columns is not None else len(reader.schema_arrow.names))
    for table in iter_tables(reader, columns, rows):
        frame = pl.from_arrow(table)
        assert isinstance(frame, pl.DataFrame)
        yield frame


def message_aligned(frames: Iterable[pl.DataFrame]) -> Iterator[pl.DataFrame]:
    """Re-cut `book_delta_v2` batches so that none ends inside a message (rows sharing
    received_time and sequence_number): the last message of a batch moves to the next one."""
    held: pl.DataFrame | None = None
    for frame in frames:
        if held is not None:
            frame = pl.concat([held, frame], how="vertical")
            held = None
        if frame.is_empty():
            continue
        cut = _last_message_start(frame)
        if cut < frame.height:
            held = frame.slice(cut)
            frame = frame.slice(0, cut)
        if not frame.is_empty():
            yield frame
    if held is not None and not held.is_empty():
        yield held


def column_chunks(batch: pl.DataFrame, names: list[str]) -> list[list[pl.Series]]:
    """The columns `names` of `batch` chunk by chunk (a list of the columns' chunks a chunk), without
    a copy: a batch glued from two by `message_aligned` would be copied whole by every `to_numpy`.
    Columns whose chunks differ in length are rechunked first."""
    columns = [batch[name] for name in names]
    if len({tuple(len(c) for c in column.get_chunks()) for column in columns}) > 1:
        columns = [column.rechunk() for column in columns]
    return [list(part) for part in zip(*[column.get_chunks() for column in columns], strict=True) if len(part[0])]


def _last_message_start(frame: pl.DataFrame) -> int:
    """Where the trailing run of the frame's last message (its rows sharing the last row's
    received_time and sequence_number) starts. Looked for from the end in growing slices, as a
    message is a few rows: a pass over the whole batch was 0.6-0.8 s of the main thread's
    samples in the bench day's deltas import."""
    received, sequence = frame.get_column("received_time"), frame.get_column("sequence_number")
    span = 64
    while True:
        start = max(0, frame.height - span)
        r, s = received.slice(start).to_numpy(), sequence.slice(start).to_numpy()
        other = np.flatnonzero((r != r[-1]) | (s != s[-1]))
        if len(other):
            return start + int(other[-1]) + 1
        if not start:
            return 0
        span *= 16

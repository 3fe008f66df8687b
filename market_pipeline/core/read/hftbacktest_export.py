"""One instrument-day of the lake as an hftbacktest data file (`<EXCHANGE>_<SYMBOL>_<day>.npz`, key
`data`, EVENT_DTYPE rows), in bounded memory:

1. events go to a scratch Parquet file in batches: the trades (TRADE_EVENT, the taker's side), the
   previous day's end-of-day book when the rebuild continued from it (DEPTH_SNAPSHOT_EVENTs at the
   day's start: hftbacktest's "depth snapshot at the start"), then the depth events in our replay
   order (`hftbacktest_depth.depth_events`); each with a unique id;
2. DuckDB (memory limit, spills to disk) streams them back twice, ordered by local and by exchange
   time, and `merge_orders` interleaves the two streams batch by batch into the final events;
3. those are appended to a scratch file, then copied into the `.npz` (a zip holding `data.npy`),
   chunk by chunk.

exch_ts is the vendor's `origin_time`, local_ts our `received_time`. Raw deltas flagged
`is_snapshot` (Tardis) are written as plain depth updates.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from market_pipeline.core.day_clock import day_start_ns
from market_pipeline.core.lake import parquet_io
from market_pipeline.core.lake.files import atomic_path
from market_pipeline.core.lake.schemas import BOOK_LEVELS
from market_pipeline.core.read import partitions
from market_pipeline.core.read.hftbacktest_depth import LAST_LOCAL, NEXT_ID, DepthDeltas, VendorSnapshots, depth_events
from market_pipeline.core.read.hftbacktest_format import (
    BUY_EVENT,
    DEPTH_SNAPSHOT_EVENT,
    EVENT_DTYPE,
    SELL_EVENT,
    TRADE_EVENT,
    ScratchEvents,
    merge_orders,
)
from market_pipeline.core.read.partitions import Instrument

EXPORT_BATCH_ROWS = 500_000
SNAPSHOT_BATCH_ROWS = 20_000  # 80 float levels a row: about 13 MB a batch (and its copies)
SCRATCH_MEMORY_LIMIT = "512MB"
SCRATCH_SCHEMA = pa.schema(
    [
        ("id", pa.int64()),
        ("ev", pa.uint64()),
        ("exch_ts", pa.int64()),
        ("local_ts", pa.int64()),
        ("px", pa.float64()),
        ("qty", pa.float64()),
    ]
)
SNAPSHOT_COLUMNS = [
    f"{side}_{i}_{field}" for side in ("bid", "ask") for field in ("price", "size") for i in range(BOOK_LEVELS)
]


@dataclass(frozen=True)
class ExportedDay:
    path: Path
    events: int
    trades: int
    depth_events: int
    start_snapshot_levels: int


def export_day(
    lake_dir: Path, instrument: Instrument, day: dt.date, out_dir: Path, batch_rows: int = EXPORT_BATCH_ROWS
) -> ExportedDay:
    target = out_dir / f"{instrument.exchange}_{instrument.symbol}_{day.isoformat()}.npz"
    deltas_path = partitions.day_file(lake_dir, "book_delta_v2", instrument, day)
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=".export-") as scratch_name:
        scratch = Path(scratch_name)
        events_file = scratch / "events.parquet"
        with pq.ParquetWriter(events_file, SCRATCH_SCHEMA) as writer:
            trades = _write_trades(lake_dir, instrument, day, writer, batch_rows)
            state = np.array([day_start_ns(day), trades], np.int64)
            levels = _write_start_book(lake_dir, instrument, day, deltas_path, writer, state)
            _write_depth(lake_dir, instrument, day, deltas_path, writer, state, batch_rows)
        total = _merge_to_npy_body(events_file, scratch, scratch / "data.body", batch_rows)
        with atomic_path(target) as tmp:
            _write_npz(scratch / "data.body", total, tmp)
    return ExportedDay(target, total, trades, int(state[NEXT_ID]) - trades - levels, levels)


def _write_trades(
    lake_dir: Path, instrument: Instrument, day: dt.date, writer: pq.ParquetWriter, batch_rows: int
) -> int:
    path = partitions.day_file(lake_dir, "trades", instrument, day)
    if not path.is_file():
        return 0
    written = 0
    columns = ["origin_time", "received_time", "side", "price", "quantity"]
    for batch in parquet_io.open_file(path).iter_batches(batch_size=batch_rows, columns=columns):
        side = batch.column("side").to_numpy(zero_copy_only=False)
        ev = np.where(
            side == "buy", BUY_EVENT | TRADE_EVENT, np.where(side == "sell", SELL_EVENT | TRADE_EVENT, TRADE_EVENT)
        ).astype(np.uint64)
        n = batch.num_rows
        writer.write_batch(
            pa.record_batch(
                [
                    pa.array(np.arange(written, written + n, dtype=np.int64)),
                    pa.array(ev),
                    batch.column("origin_time"),
                    batch.column("received_time"),
                    batch.column("price"),
                    batch.column("quantity"),
                ],
                schema=SCRATCH_SCHEMA,
            )
        )
        written += n
    return written


def _write_start_book(
    lake_dir: Path, instrument: Instrument, day: dt.date, deltas_path: Path, writer: pq.ParquetWriter, state: np.ndarray
) -> int:
    """The previous day's end-of-day book, when the rebuild continued from it (the same rule:
    the day's first sequence number comes after the checkpoint's last)."""
    checkpoint = partitions.day_file(lake_dir, "checkpoints", instrument, day - dt.timedelta(days=1), "book.parquet")
    if not checkpoint.is_file() or not deltas_path.is_file():
        return 0
    table = parquet_io.read_table(checkpoint)
    meta = json.loads(table.schema.metadata[b"market_pipeline"])
    first = next(parquet_io.open_file(deltas_path).iter_batches(batch_size=1, columns=["sequence_number"]), None)
    if first is None or first.num_rows == 0 or int(first.column(0)[0].as_py()) <= int(meta["last_sequence_number"]):
        return 0
    tick, lot = Decimal(meta["tick_size"]), Decimal(meta["lot_size"])
    is_bid = table.column("side_is_bid").to_numpy(zero_copy_only=False)
    px = table.column("price_ticks").to_numpy() * float(tick)
    qty = table.column("size_lots").to_numpy() * float(lot)
    n = table.num_rows
    start = int(state[LAST_LOCAL])
    ev = np.where(is_bid, DEPTH_SNAPSHOT_EVENT | BUY_EVENT, DEPTH_SNAPSHOT_EVENT | SELL_EVENT).astype(np.uint64)
    times = pa.array(np.full(n, start, np.int64))
    writer.write_batch(
        pa.record_batch(
            [
                pa.array(np.arange(state[NEXT_ID], state[NEXT_ID] + n, dtype=np.int64)),
                pa.array(ev),
                times,
                times,
                pa.array(px),
                pa.array(qty),
            ],
            schema=SCRATCH_SCHEMA,
        )
    )
    state[NEXT_ID] += n
    return n


def _write_depth(
    lake_dir: Path,
    instrument: Instrument,
    day: dt.date,
    deltas_path: Path,
    writer: pq.ParquetWriter,
    state: np.ndarray,
    batch_rows: int,
) -> None:
    deltas = _Arrays(_delta_batches(deltas_path, batch_rows), DepthDeltas, DELTA_DTYPES)
    snaps = _Arrays(_snapshot_batches(lake_dir, instrument, day, batch_rows), VendorSnapshots, SNAPSHOT_DTYPES)
    out = ScratchEvents(*(np.empty(batch_rows + 2 * (BOOK_LEVELS + 1), dtype) for (dtype,) in SCRATCH_DTYPES))
    while True:
        used_d, used_s, n = depth_events(deltas.arrays, snaps.arrays, deltas.final, snaps.final, state, out)
        if n:
            writer.write_batch(pa.record_batch([pa.array(column[:n]) for column in out], schema=SCRATCH_SCHEMA))
        deltas.consume(used_d)
        snaps.consume(used_s)
        if n == 0 and not deltas.refill_if_empty() and not snaps.refill_if_empty():
            return


DELTA_COLUMNS = ["received_time", "origin_time", "sequence_number", "side_is_bid", "price", "size"]
DELTA_DTYPES = ((np.int64,), (np.int64,), (np.int64,), (np.bool_,), (np.float64,), (np.float64,))
SNAPSHOT_DTYPES = ((np.int64,), (np.int64,), (np.bool_,), *[(np.float64, BOOK_LEVELS)] * 4)
SCRATCH_DTYPES = ((np.int64,), (np.uint64,), (np.int64,), (np.int64,), (np.float64,), (np.float64,))


class _Arrays:
    """Rows of a stream of batches (tuples of numpy arrays) not yet used by a kernel, as the named
    tuple `kind` the kernel takes."""

    def __init__(self, batches: Iterator[tuple[np.ndarray, ...]], kind: type, dtypes: tuple[tuple, ...]) -> None:
        self.batches = batches
        self.kind = kind
        self.arrays = kind(*(np.empty((0, *dtype[1:]), dtype[0]) for dtype in dtypes))
        self.final = False
        self.refill_if_empty()

    def refill_if_empty(self) -> bool:
        """Append the next batch when every row was used; whether one was appended."""
        if self.final or len(self.arrays[0]):
            return False
        more = next(self.batches, None)
        if more is None:
            self.final = True
            return False
        self.arrays = self.kind(*(np.ascontiguousarray(b, a.dtype) for a, b in zip(self.arrays, more, strict=True)))
        return True

    def consume(self, rows: int) -> None:
        self.arrays = self.kind(*(a[rows:] for a in self.arrays))


def _delta_batches(path: Path, batch_rows: int) -> Iterator[tuple[np.ndarray, ...]]:
    if path.is_file():
        for batch in parquet_io.open_file(path).iter_batches(batch_size=batch_rows, columns=DELTA_COLUMNS):
            yield tuple(_numpy(batch.column(name)) for name in DELTA_COLUMNS)


def _snapshot_batches(lake_dir: Path, instrument: Instrument, day: dt.date, batch_rows: int) -> Iterator[tuple]:
    """The day's vendor snapshots with whether the rebuilt book already matched each (then the rebuild
    changed nothing, and no event is needed): from lake/book_agreement, row for row; all unmatched
    without that file (the capture source writes none)."""
    path = partitions.day_file(lake_dir, "book", instrument, day)
    if not path.is_file():
        return
    book = parquet_io.open_file(path)
    agreement_path = partitions.day_file(lake_dir, "book_agreement", instrument, day)
    agreement = parquet_io.open_file(agreement_path) if agreement_path.is_file() else None
    if agreement is not None and agreement.metadata.num_rows != book.metadata.num_rows:
        agreement = None
    columns = ["sequence_number", "origin_time", *SNAPSHOT_COLUMNS]
    matches = (
        agreement.iter_batches(batch_size=min(batch_rows, SNAPSHOT_BATCH_ROWS), columns=["matched"])
        if agreement is not None
        else None
    )
    for batch in book.iter_batches(batch_size=min(batch_rows, SNAPSHOT_BATCH_ROWS), columns=columns):
        matched = _numpy(next(matches).column(0)) if matches is not None else np.zeros(batch.num_rows, np.bool_)

        def side(prefix: str, field: str, batch: pa.RecordBatch = batch) -> np.ndarray:
            levels = [_numpy(batch.column(f"{prefix}_{i}_{field}")) for i in range(BOOK_LEVELS)]
            return np.stack(levels, axis=1).reshape(batch.num_rows, BOOK_LEVELS)

        yield (
            _numpy(batch.column("sequence_number")),
            _numpy(batch.column("origin_time")),
            matched,
            side("bid", "price"),
            side("bid", "size"),
            side("ask", "price"),
            side("ask", "size"),
        )


def _numpy(column: pa.Array) -> np.ndarray:
    """A column as a contiguous numpy array; absent levels (nulls) as NaN."""
    if pa.types.is_floating(column.type):
        return np.ascontiguousarray(column.fill_null(float("nan")).to_numpy(zero_copy_only=False))
    return np.ascontiguousarray(column.to_numpy(zero_copy_only=False))


def _merge_to_npy_body(events_file: Path, scratch: Path, body: Path, batch_rows: int) -> int:
    """Both orders of the scratch events from DuckDB, merged into EVENT_DTYPE rows appended to `body`."""
    con = parquet_io.scratch_duckdb(scratch, SCRATCH_MEMORY_LIMIT, preserve_insertion_order=True)
    source = f"read_parquet('{events_file}')"
    local = con.cursor().execute(f"SELECT * FROM {source} ORDER BY local_ts, id").to_arrow_reader(batch_rows)
    exch = con.cursor().execute(f"SELECT * FROM {source} ORDER BY exch_ts, id").to_arrow_reader(batch_rows)
    l_stream, e_stream = (
        _Arrays(_scratch_batches(local), ScratchEvents, SCRATCH_DTYPES),
        _Arrays(_scratch_batches(exch), ScratchEvents, SCRATCH_DTYPES),
    )
    out = np.empty(batch_rows, EVENT_DTYPE)
    total = 0
    with open(body, "wb") as sink:
        while True:
            used_l, used_e, n = merge_orders(l_stream.arrays, e_stream.arrays, l_stream.final, e_stream.final, out)
            out[:n].tofile(sink)
            total += n
            l_stream.consume(used_l)
            e_stream.consume(used_e)
            if n == 0 and not l_stream.refill_if_empty() and not e_stream.refill_if_empty():
                break
    con.close()
    return total


def _scratch_batches(reader: pa.RecordBatchReader) -> Iterator[tuple[np.ndarray, ...]]:
    for batch in reader:
        yield tuple(_numpy(batch.column(name)) for name in SCRATCH_SCHEMA.names)


def _write_npz(body: Path, rows: int, target: Path) -> None:
    """`np.savez_compressed(target, data=...)` of the rows in `body`, copied chunk by chunk."""
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED, allowZip64=True) as archive:
        with archive.open("data.npy", "w", force_zip64=True) as entry, open(body, "rb") as source:
            header = {"descr": np.lib.format.dtype_to_descr(EVENT_DTYPE), "fortran_order": False, "shape": (rows,)}
            np.lib.format.write_array_header_1_0(entry, header)
            shutil.copyfileobj(source, entry, 16 << 20)

"""The sync carry file: what a capture day hands the next beside its end-of-day checkpoint.

`sync_carry.parquet` holds `sync_carry.SyncCarry`: one row per level update of the diffs still
buffered for a REST snapshot at the end of the day (none when the book ended FIRST or LIVE), in
line order, on the checkpoint's tick and lot grid, and in the file's metadata the whole `SYNC`
record (state, lastUpdateId, last applied u, ...). The next day resumes from it
(`sync_carry.resume`), so a snapshot arriving after midnight is joined by the diffs from before.
"""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import numpy as np
import pyarrow as pa

from market_pipeline.core.book.fixed_point import Grid
from market_pipeline.core.lake import parquet_io
from market_pipeline.core.lake.files import atomic_path
from market_pipeline.vendors.binance import sync_carry as sc
from market_pipeline.vendors.binance import sync_kernel as br
from market_pipeline.vendors.binance.delta_batches import message_groups

SYNC_CARRY_FILE = "sync_carry.parquet"
METADATA_KEY = b"market_pipeline"

# Per level row: the diff message's fields (repeated on each of its rows), then the level.
CARRY_SCHEMA = pa.schema(
    [
        ("line_no", pa.int64()),
        ("first_update_id", pa.int64()),
        ("update_id", pa.int64()),
        ("prev_update_id", pa.int64()),
        ("received_time", pa.int64()),
        ("origin_time", pa.int64()),
        ("side_is_bid", pa.bool_()),
        ("price_ticks", pa.int64()),
        ("size_lots", pa.int64()),
    ]
)
# Message fields of `CaptureDiffs` stored under the carry file's column names.
_DIFF_COLUMNS = {
    "line": "line_no",
    "first_u": "first_update_id",
    "last_u": "update_id",
    "prev_u": "prev_update_id",
    "recv": "received_time",
    "orig": "origin_time",
}


def write_sync_carry(path: Path, carry: sc.SyncCarry, grid: Grid) -> None:
    diffs, rows = carry.diffs, carry.rows
    per_row = np.repeat(np.arange(len(diffs.line)), diffs.end - diffs.start)
    columns = {column: getattr(diffs, field)[per_row] for field, column in _DIFF_COLUMNS.items()}
    columns.update(side_is_bid=rows.is_bid, price_ticks=rows.tick, size_lots=rows.lot)
    meta = {
        "tick_size": str(grid.tick_size),
        "lot_size": str(grid.lot_size),
        "sync": {name: carry.sync[0][name].item() for name in br.SYNC.names},
    }
    table = pa.table(columns, schema=CARRY_SCHEMA).replace_schema_metadata({METADATA_KEY: json.dumps(meta)})
    with atomic_path(path) as tmp:
        parquet_io.write_table(table, tmp)


def read_sync_carry(path: Path, grid: Grid) -> sc.SyncCarry | None:
    """The carry written beside a checkpoint; None when absent (a checkpoint written before carry
    files existed) or on another grid (the checkpoint itself is then ignored too)."""
    if not path.is_file():
        return None
    table = parquet_io.read_table(path)
    try:
        meta = json.loads(table.schema.metadata[METADATA_KEY])
        record = meta["sync"]
        on_grid = Decimal(meta["tick_size"]) == grid.tick_size and Decimal(meta["lot_size"]) == grid.lot_size
        sync = np.zeros(1, br.SYNC)
        for name in br.SYNC.names:
            sync[0][name] = record[name]
        if table.schema.names != CARRY_SCHEMA.names:
            raise KeyError(f"columns {table.schema.names}, expected {CARRY_SCHEMA.names}")
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{path}: not a sync carry file ({exc!r}); delete it to rebuild the day cold") from None
    if not on_grid:
        return None
    column = {name: table.column(name).to_numpy() for name in CARRY_SCHEMA.names}
    start, _, end = message_groups(column["line_no"])
    fields = {field: column[name][start] for field, name in _DIFF_COLUMNS.items()}
    diffs = br.CaptureDiffs(start=start.astype(np.int64), end=end.astype(np.int64), **fields)
    rows = br.LevelRows(column["side_is_bid"], column["price_ticks"], column["size_lots"])
    return sc.SyncCarry(sync, diffs, rows)

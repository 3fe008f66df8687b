"""The end-of-day checkpoint: the full-depth book and where the replay stopped, so the next day
resumes from it (`lake/checkpoints/.../book.parquet`, docs/data-formats.md)."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import numpy as np
import pyarrow as pa

from market_pipeline.core.book.fixed_point import Grid
from market_pipeline.core.book.ladder import ST_BASE, new_book, set_level
from market_pipeline.core.lake import parquet_io
from market_pipeline.core.lake.files import atomic_path


def load_checkpoint(path: Path, grid: Grid) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict] | None:
    """The full-depth book saved at the end of the previous day, if it is on the same grid."""
    if not path.is_file():
        return None
    table = parquet_io.read_table(path)
    meta = json.loads(table.schema.metadata[b"market_pipeline"])
    if Decimal(meta["tick_size"]) != grid.tick_size or Decimal(meta["lot_size"]) != grid.lot_size:
        return None
    bid, ask, st = new_book()
    sides = table.column("side_is_bid").to_numpy(zero_copy_only=False)
    ticks = table.column("price_ticks").to_numpy()
    lots = table.column("size_lots").to_numpy()
    for is_bid, tick, lot in zip(sides, ticks, lots, strict=True):
        set_level(bid, ask, st, bool(is_bid), int(tick), int(lot))
    return bid, ask, st, meta


def write_checkpoint(path: Path, bid, ask, st, grid: Grid, state: np.ndarray) -> None:
    """The full-depth book and the replay's position (`state`: a `delta_replay.REPLAY_STATE` record)."""
    base = st[ST_BASE]
    bid_idx = np.flatnonzero(bid)
    ask_idx = np.flatnonzero(ask)
    table = pa.table(
        {
            "side_is_bid": np.concatenate([np.ones(len(bid_idx), bool), np.zeros(len(ask_idx), bool)]),
            "price_ticks": np.concatenate([bid_idx + base, ask_idx + base]).astype(np.int64),
            "size_lots": np.concatenate([bid[bid_idx], ask[ask_idx]]).astype(np.int64),
        }
    )
    meta = {
        "tick_size": str(grid.tick_size),
        "lot_size": str(grid.lot_size),
        "last_sequence_number": int(state[0]["last_seq"]),
        "last_received_time": int(state[0]["last_recv"]),
        "synced": bool(state[0]["synced"]),
    }
    table = table.replace_schema_metadata({"market_pipeline": json.dumps(meta)})
    with atomic_path(path) as tmp:
        parquet_io.write_table(table, tmp)

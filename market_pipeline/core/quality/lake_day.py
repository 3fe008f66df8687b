"""One instrument-day's lake files, as the quality measures read them, and the raw tables' day
statistics (the import's, or recomputed from the file when they no longer describe it)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from market_pipeline.core.instruments import Instrument
from market_pipeline.core.lake import parquet_io
from market_pipeline.core.lake.batches import iter_frames
from market_pipeline.core.lake.paths import (
    PARTITION_FILE,
    book_agreement_dir,
    books_partition_dir,
    capture_fidelity_dir,
    raw_partition_dir,
    stats_partition_dir,
)
from market_pipeline.core.quality.day_stats import DayStats
from market_pipeline.core.quality.day_stats_builder import compute_day_stats
from market_pipeline.core.telemetry import progress

WORST_ROWS = 10  # offending rows listed in check metadata and reports
# Rows per batch of a measure's pass over a day's deltas (a few columns: a few MB a batch).
BATCH_ROWS = 1 << 18


@dataclass(frozen=True)
class DayFiles:
    """The lake files of one instrument-day."""

    instrument: Instrument
    day: dt.date
    deltas: Path
    snapshots: Path
    trades: Path
    books: Path
    agreement: Path
    # The capture path rebuilds *to* each REST snapshot (they are its sync points), so there is
    # no independent vendor snapshot to compare against and no agreement table; its bookTicker
    # checks (reconstructed_books metadata) play that role.
    # The capture rebuild's fidelity table (vendors/binance); absent for other sources.
    fidelity: Path
    has_agreement: bool = True
    # Sequence numbers grow by exactly 1 per message (a jump proves a gap), else only monotonic.
    contiguous: bool = False
    lake: Path | None = None  # the lake root, for the raw tables' day statistics (`read_day_stats`)

    @classmethod
    def of(cls, lake: Path, instrument: Instrument, day: dt.date, *, has_agreement: bool, contiguous: bool) -> DayFiles:
        ex, sym = instrument.exchange, instrument.symbol
        return cls(
            instrument=instrument,
            day=day,
            deltas=raw_partition_dir(lake, "book_delta_v2", ex, sym, day) / PARTITION_FILE,
            snapshots=raw_partition_dir(lake, "book", ex, sym, day) / PARTITION_FILE,
            trades=raw_partition_dir(lake, "trades", ex, sym, day) / PARTITION_FILE,
            books=books_partition_dir(lake, ex, sym, day) / PARTITION_FILE,
            agreement=book_agreement_dir(lake, ex, sym, day) / PARTITION_FILE,
            fidelity=capture_fidelity_dir(lake, ex, sym, day) / PARTITION_FILE,
            has_agreement=has_agreement,
            contiguous=contiguous,
            lake=lake,
        )

    def raw_file(self, table: str) -> Path:
        return {"book_delta_v2": self.deltas, "book": self.snapshots, "trades": self.trades}[table]

    def require(self, path: Path) -> Path:
        if not path.is_file():
            raise FileNotFoundError(f"{self.instrument.key} {self.day}: lake file missing: {path}")
        return path


def read_day_stats(files: DayFiles, table: str) -> DayStats:
    """The day statistics of a raw table ("book_delta_v2", "book", "trades"): the ones its import
    wrote beside the day when they still describe the lake file, else computed from the file in
    row batches (bounded memory, one read)."""
    data = files.require(files.raw_file(table))
    contiguous = files.contiguous and table == "book_delta_v2"
    if files.lake is not None:
        ex, sym = files.instrument.exchange, files.instrument.symbol
        stored = DayStats.read(stats_partition_dir(files.lake, table, ex, sym, files.day))
        if stored is not None and stored.matches(data) and bool(stored.summary.get("contiguous")) == contiguous:
            return stored
    return compute_day_stats(
        data, table, files.day, files.instrument.tick_size, files.instrument.lot_size, contiguous=contiguous
    )


def measured_frames(path: Path, columns: list[str]) -> Iterator[pl.DataFrame]:
    """A measure's pass over a lake file: `columns` in file order, BATCH_ROWS at a time, counted
    in the current task's progress."""
    progress.expect(parquet_io.num_rows(path))
    for frame in iter_frames(path, columns, BATCH_ROWS):
        progress.advance(frame.height)
        yield frame

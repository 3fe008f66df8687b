"""A generated synthetic day read back in batches, for the writers that render it in other
vendors' formats (`tardis_format`, `capture_writer`).

Memory is set by the batch size, never by the day: the delta file is read a row group at a time
and re-cut between messages; the trades and the ground truth are read alongside it up to where
the current batch of messages ends.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import polars as pl

from market_pipeline.core.instruments import Instrument
from market_pipeline.core.lake.batches import iter_frames, message_aligned
from market_pipeline.core.lake.paths import partition_dir
from market_pipeline.vendors.synthetic.generate import GROUND_TRUTH_DIR, PART_FILE, TOPS_FILE, TRUTH_BOOK_FILE

# Delta rows per batch: the text rendered from a batch takes a few times its columns (~8 MB). On the
# scale-0.2 realistic day the capture writer peaked at 506 MB with 100,000 rows (15 s), 742 MB with
# 500,000 (23 s).
DELTA_BATCH_ROWS = 100_000
# Rows per read of the trades and the ground truth (the truth is 83 columns wide).
SIDE_BATCH_ROWS = 100_000


@dataclass(frozen=True)
class DayFiles:
    deltas: Path
    trades: Path
    truth: Path  # one row per synthetic vendor snapshot: the true book after message sequence_number
    tops: Path  # one row per message: the true best bid and ask after message sequence_number


def day_files(root: Path, instrument: Instrument, day: dt.date) -> DayFiles:
    """The files `generate.generate_day` wrote under `root` for the instrument-day."""
    ex, sym = instrument.exchange, instrument.symbol
    truth_dir = partition_dir(root / GROUND_TRUTH_DIR, "synthetic", ex, sym, day)
    return DayFiles(
        deltas=partition_dir(root, "book_delta_v2", ex, sym, day) / PART_FILE,
        trades=partition_dir(root, "trades", ex, sym, day) / PART_FILE,
        truth=truth_dir / TRUTH_BOOK_FILE,
        tops=truth_dir / TOPS_FILE,
    )


def message_batches(path: Path, columns: list[str] | None = None) -> Iterator[pl.DataFrame]:
    """The delta file in batches that end between messages."""
    return message_aligned(iter_frames(path, columns, DELTA_BATCH_ROWS))


class RowsThrough:
    """A file sorted by `key`, handed out in order: `through(bound)` returns the next rows whose
    key is <= bound (`None`: all that are left), reading only as far as needed."""

    def __init__(self, path: Path, key: str, columns: list[str] | None = None) -> None:
        self.path = path
        self.key = key
        self._last: int | None = None
        self._frames = iter_frames(path, columns, SIDE_BATCH_ROWS)
        self._held: pl.DataFrame | None = None
        self._done = False

    def _read(self) -> bool:
        frame = next(self._frames, None)
        if frame is None:
            self._done = True
            return False
        keys = frame[self.key]
        if not keys.is_sorted() or (self._last is not None and keys.len() and keys[0] < self._last):
            raise ValueError(f"{self.path}: rows are not in {self.key} order")
        if keys.len():
            self._last = keys[-1]
        self._held = frame if self._held is None else pl.concat([self._held, frame])
        return True

    def through(self, bound: int | None) -> pl.DataFrame | None:
        while not self._done and (self._held is None or bound is None or self._held[self.key][-1] <= bound):
            self._read()
        held, self._held = self._held, None
        if held is None or bound is None:
            return held
        cut = int((held[self.key] <= bound).sum())
        if cut < held.height:
            self._held = held.slice(cut)
        return held.slice(0, cut)


def decimal_text(column: str, step: Decimal, where: Path) -> tuple[pl.Expr, pl.Expr]:
    """(the exact decimal text of a float column on the grid of `step`, a check expression that
    is true for values off that grid). The float is the nearest one to a decimal with at most
    `step`'s digits, so scaling and rounding gives the decimal back exactly; the text has
    `step`'s number of decimals, as Binance and Tardis write them (never float repr noise)."""
    _, digits, exponent = step.normalize().as_tuple()
    assert isinstance(exponent, int), f"{where}: step {step} is not finite"
    decimals = max(0, -exponent)
    units_per_step = int(step.scaleb(decimals))
    scaled = pl.col(column) * float(10**decimals)
    units = scaled.round(0).cast(pl.Int64)
    off_grid = ((scaled - units).abs() > 1e-6) | (units % units_per_step != 0)
    if decimals == 0:
        return units.cast(pl.String), off_grid
    whole = (units // 10**decimals).cast(pl.String)
    fraction = (units % 10**decimals).cast(pl.String).str.zfill(decimals)
    return pl.concat_str([whole, pl.lit("."), fraction]), off_grid


def check_on_grid(frame: pl.DataFrame, checks: dict[str, pl.Expr], where: Path) -> None:
    """Raise naming the file, column and value when a value is off its grid."""
    for column, off_grid in checks.items():
        bad = frame.filter(off_grid.fill_null(False))
        if bad.height:
            raise ValueError(f"{where}: {column} value {bad[column][0]!r} is off its grid ({bad.height} values)")

"""Off-grid and float-noise values of a day's raw tables, counted by the import's day statistics
and listed (the first WORST_ROWS of each kind per column) by one bounded pass over the prices and
sizes, made only when the statistics count any: the raw check `price_precision` and
`validation_reports` alike. The grid test itself is `precision.grid_flags`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from market_pipeline.core.day_clock import iso
from market_pipeline.core.instruments import Instrument
from market_pipeline.core.quality.day_stats import DayStats
from market_pipeline.core.quality.lake_day import WORST_ROWS, DayFiles, measured_frames, read_day_stats
from market_pipeline.core.quality.precision import grid_flags

DELTA_VALUE_COLUMNS = {"price": "price", "size": "size"}
TRADE_VALUE_COLUMNS = {"price": "price", "quantity": "size"}
# (columns graded, the grid of each) of the tables whose bad values are listed.
VALUE_COLUMNS = {"book_delta_v2": DELTA_VALUE_COLUMNS, "trades": TRADE_VALUE_COLUMNS}
# What a listed value is located by, beside its row in the file.
KEY_COLUMNS = {"book_delta_v2": ["received_time", "sequence_number"], "trades": ["received_time"]}


@dataclass
class PrecisionTally:
    """Off-grid and precision-loss counts of tables' columns, with the first WORST_ROWS flags of
    each kind per table and column (`row`: the row in its lake file)."""

    off_grid: int = 0
    loss: int = 0
    flags: list[pl.DataFrame] = field(default_factory=list)
    _listed: dict[tuple[str, str, bool], int] = field(default_factory=dict)

    def add(self, table: str, frame: pl.DataFrame, offset: int, instrument: Instrument) -> None:
        """Rows `offset`.. of `table`'s lake file."""
        keep = KEY_COLUMNS[table]
        for column, grid in VALUE_COLUMNS[table].items():
            step = instrument.tick_size if grid == "price" else instrument.lot_size
            values = frame[column].to_numpy()
            off_grid, loss = grid_flags(values, step)
            self.off_grid += int(off_grid.sum())
            self.loss += int(loss.sum())
            for kind, mask in ((True, off_grid), (False, loss)):
                room = WORST_ROWS - self._listed.get((table, column, kind), 0)
                if room <= 0 or not mask.any():
                    continue
                bad = np.flatnonzero(mask)[:room]
                self._listed[(table, column, kind)] = self._listed.get((table, column, kind), 0) + len(bad)
                self.flags.append(
                    frame.select(keep)[bad].with_columns(
                        pl.Series("row", bad + offset, pl.Int64),
                        pl.lit(column).alias("column"),
                        pl.Series("value", values[bad], pl.Float64),
                        pl.Series("off_grid", off_grid[bad], pl.Boolean),
                        pl.Series("steps", values[bad] / float(step), pl.Float64),
                    )
                )

    def scan(self, table: str, path: Path, instrument: Instrument) -> int:
        """One pass over the table's times and graded columns; the rows read."""
        rows = 0
        for frame in measured_frames(path, [*KEY_COLUMNS[table], *VALUE_COLUMNS[table]]):
            self.add(table, frame, rows, instrument)
            rows += frame.height
        return rows

    def frame(self) -> pl.DataFrame:
        if not self.flags:
            return pl.DataFrame(schema={"row": pl.Int64, "off_grid": pl.Boolean})
        return pl.concat(self.flags, how="diagonal_relaxed")


def tally_tables(files: DayFiles, stats: dict[str, DayStats]) -> PrecisionTally:
    """The bad values of the tables of `stats` (table -> its day statistics, read by the caller); a
    table is read only when its statistics count any."""
    tally = PrecisionTally()
    for table, table_stats in stats.items():
        summary = table_stats.summary
        off_grid, loss = int(summary["off_grid_values"]), int(summary["precision_loss_events"])
        if off_grid + loss:
            tally.scan(table, files.require(files.raw_file(table)), files.instrument)
    return tally


def snapshot_precision(files: DayFiles) -> tuple[int, int]:
    """(off_grid, precision_loss) over every price and size of the vendor snapshots, from their
    day statistics."""
    summary = read_day_stats(files, "book").summary
    return int(summary["off_grid_values"]), int(summary["precision_loss_events"])


def worst_precision(flags: pl.DataFrame, limit: int = WORST_ROWS) -> list[dict[str, object]]:
    """Off-grid values first, then float noise, each in row order."""
    if flags.is_empty():
        return []
    worst = flags.sort(["off_grid", "row"], descending=[True, False]).head(limit)
    return [
        {
            "row": r["row"],
            "received_time": iso(r.get("received_time")),
            "sequence_number": r.get("sequence_number"),
            "column": r["column"],
            "value": repr(r["value"]),
            "steps": r["steps"],
            "problem": "off_grid" if r["off_grid"] else "precision_loss",
        }
        for r in worst.iter_rows(named=True)
    ]

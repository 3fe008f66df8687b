"""Which exact duplicate rows (identical in every column) the raw import drops: only where dropping
is provably lossless (`DUPLICATE_RULES`); the others are counted, sampled and kept
(docs/data-formats.md, "Duplicate rows")."""

from __future__ import annotations

import numpy as np
import polars as pl

from market_pipeline.core.lake.batches import MESSAGE_TABLES
from market_pipeline.core.lake.schemas import book_level_columns
from market_pipeline.core.quality.day_stats import CONFLICTING_TRADE_ID, DUPLICATE, SAMPLE_SCHEMA
from market_pipeline.core.quality.row_keys import message_repeats, repeated_rows, row_marks
from market_pipeline.core.reused_arrays import ReusedArrays

# Which exact duplicates (identical in every column) the import drops, per table.
DUPLICATE_RULES = {
    # A trade is one print identified by its id: the same row again anywhere in the day is the
    # same print. A trade id seen again with other values is counted (conflicting) and kept.
    "trades": "anywhere",
    # Absolute level sizes: the same row twice in a row sets a level to the same size twice, so
    # the second one changes nothing. A repeat further away in the message is counted, kept (a
    # row in between may have changed that level).
    "book_delta_v2": "adjacent",
    # A snapshot row repeated right after itself is the same book state twice.
    "book": "adjacent",
}
# Buffers a table-day's duplicate search keeps for `message_repeats` (`ReusedArrays`): its six
# arrays of the batch being searched and the two it returned for the batch before.
MESSAGE_ARRAYS = 8


# A snapshot row's levels behind the touch: its times, sequence number and touch tell it apart.
_BEHIND_THE_TOUCH = frozenset(book_level_columns()) - frozenset(book_level_columns(1))


def identity_columns(columns: list[str]) -> list[str]:
    """The columns a batch's rows are hashed by to find duplicate candidates: all but the book
    levels behind the touch (`bid_1_price`...), which a snapshot row's times, sequence number and
    touch already tell apart. Candidates are compared in every column, so the result does not
    depend on this choice, only the time. Measured on the bench day against hashing every column:
    its 864,000 snapshots (83 columns) imported in 1.70-1.78 s instead of 1.90-2.01 s."""
    return [c for c in columns if c not in _BEHIND_THE_TOUCH]


def trade_id_hashes(ids: pl.Series) -> np.ndarray:
    return ids.cast(pl.String).hash(seed=0).to_numpy()


def repeated_hashes(hashes: list[np.ndarray]) -> np.ndarray:
    """Hashes occurring more than once across the chunks (sorted): candidate duplicate trade ids."""
    if not hashes:
        return np.empty(0, dtype=np.uint64)
    values, counts = np.unique(np.concatenate(hashes), return_counts=True)
    return values[counts > 1]


class DuplicateRows:
    """The exact duplicate rows of one table-day, batch by batch in file order, under DUPLICATE_RULES:
    counted (`counts`), sampled (`samples`, at most SAMPLE_ROWS per kind) and, when `dropping`,
    dropped where dropping is lossless.

    For `trades`, `repeated_trade_ids` (hashes from `repeated_hashes`) names the ids that occur
    more than once in the day; only those rows are compared exactly.
    """

    def __init__(self, table: str, repeated_trade_ids: np.ndarray | None, dropping: bool, sample) -> None:
        self.table = table
        self.dropping = dropping  # False: count duplicates but keep them (statistics of a lake file as it is)
        self.sample = sample  # (kind, rows) -> None: the builder's samples
        self.counts = dict.fromkeys(("duplicate_rows", "duplicate_rows_dropped", "conflicting_trade_ids"), 0)
        self._repeated = repeated_trade_ids if repeated_trade_ids is not None else np.empty(0, dtype=np.uint64)
        self._seen_trades: dict[str, set[tuple]] = {}
        self._last_row: pl.DataFrame | None = None  # the last row kept: an adjacent repeat compares with it
        self._arrays = ReusedArrays(MESSAGE_ARRAYS)  # `message_repeats`' six a batch, two of them returned

    def _remember(self, kept: pl.DataFrame) -> None:
        if kept.height and self.table not in MESSAGE_TABLES:
            self._last_row = kept.tail(1)

    def drop(self, batch: pl.DataFrame, rows_before: int) -> pl.DataFrame:
        """The batch without the duplicates the rule drops; `rows_before`: rows written so far."""
        columns = batch.columns
        if self.table == "trades":
            return self._drop_trades(batch, rows_before)
        if DUPLICATE_RULES.get(self.table) is None:
            return batch
        if self.table in MESSAGE_TABLES:
            # The batch starts a message (the builder refuses others): no row of the batch before
            # can equal one of it, as they differ in received_time or sequence_number.
            same, twice = message_repeats(batch, arrays=self._arrays)
        else:
            lead = None if self._last_row is None else self._last_row.select(columns)
            hashes, same = row_marks(batch, lead, identity_columns(columns))
            twice = repeated_rows(batch if lead is None else pl.concat([lead, batch]), hashes)
        adjacent, repeat = same[len(same) - batch.height :], (same | twice)[len(same) - batch.height :]
        n_repeat = int(repeat.sum())
        if not n_repeat:
            self._remember(batch)
            return batch
        adjacent, repeat = pl.Series(adjacent), pl.Series(repeat)
        n_adjacent = int(adjacent.sum())
        if not self.dropping:
            adjacent = adjacent & False
            n_adjacent = 0
        self.counts["duplicate_rows"] += n_repeat
        self.counts["duplicate_rows_dropped"] += n_adjacent
        indexed = batch.with_row_index("_i").with_columns(repeat.alias("_repeat"), adjacent.alias("_adjacent"))
        kept_before = (~pl.col("_adjacent")).cast(pl.Int64).cum_sum() - (~pl.col("_adjacent")).cast(pl.Int64)
        sample = (
            indexed.with_columns((kept_before + rows_before).alias("row"))
            .filter("_repeat")
            .with_columns(pl.col("_adjacent").alias("dropped"))
        )
        self.sample(DUPLICATE, sample.select([c for c in sample.columns if c in SAMPLE_SCHEMA]))
        kept = batch.filter(~adjacent)
        self._remember(kept)
        return kept

    def _drop_trades(self, batch: pl.DataFrame, rows_before: int) -> pl.DataFrame:
        if not len(self._repeated):
            return batch
        hashes = trade_id_hashes(batch["trade_id"])
        candidates = np.flatnonzero(np.isin(hashes, self._repeated))
        if not len(candidates):
            return batch
        drop = np.zeros(batch.height, dtype=bool)
        conflicting = []
        for index, row in zip(candidates, batch[candidates].iter_rows(), strict=True):
            trade_id = row[batch.columns.index("trade_id")]
            seen = self._seen_trades.setdefault(trade_id, set())
            if row in seen:
                drop[index] = True
            elif seen:
                conflicting.append(int(index))
            seen.add(row)
        duplicate = drop.copy()
        if not self.dropping:
            drop[:] = False
        self.counts["duplicate_rows"] += int(duplicate.sum())
        self.counts["duplicate_rows_dropped"] += int(drop.sum())
        self.counts["conflicting_trade_ids"] += len(conflicting)
        kept_before = np.cumsum(~drop) - (~drop)
        indexed = batch.with_columns(pl.Series("row", kept_before + rows_before, pl.Int64))
        if duplicate.any():
            dups = indexed.filter(pl.Series(duplicate)).with_columns(pl.lit(self.dropping).alias("dropped"))
            self.sample(DUPLICATE, dups.select([c for c in dups.columns if c in SAMPLE_SCHEMA]))
        if conflicting:
            kept = indexed[conflicting].with_columns(pl.lit(False).alias("dropped"))
            self.sample(CONFLICTING_TRADE_ID, kept.select([c for c in kept.columns if c in SAMPLE_SCHEMA]))
        return batch.filter(pl.Series(~drop))

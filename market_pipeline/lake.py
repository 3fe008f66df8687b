"""Read the lake from Python: `lake = market_pipeline.lake.open(data_dir)`, then polars LazyFrames of
books, trades, deltas, bars and reports by instrument and range, the book at given instants, trades
with their prevailing book, and a batched replay of book states (docs/research.md).

    import market_pipeline.lake
    lake = market_pipeline.lake.open("data")
    books = lake.books("BINANCE:BTC-USDT", dt.date(2024, 3, 1), columns=["received_time", "bid_0_price"])

No Dagster is needed to read. When DAGSTER_HOME is set (or an instance is given), the run history
says which instrument-days did not pass their blocking checks, and those are left out unless
`include_failed=True`; without one, every day with a file is read and a warning says so. An encrypted
lake is read with PIPELINE_MASTER_KEY (or `master_key`).
"""

from __future__ import annotations

import builtins
import datetime as dt
import functools
import os
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import polars as pl

from market_pipeline.core import context
from market_pipeline.core.lake.lake_guard import ENCRYPTED_MAGIC, sample_lake_file
from market_pipeline.core.read import asof
from market_pipeline.core.read import replay as replay_module
from market_pipeline.core.read.errors import EmptyRange, LakeNotFound, SkippedDaysWarning, UnknownInstrument
from market_pipeline.core.read.reader import LakeReader
from market_pipeline.core.read.verdicts import DayVerdicts, NoRunHistory
from market_pipeline.core.security import crypto

if TYPE_CHECKING:
    import dagster as dg

R = TypeVar("R")

__all__ = ["EmptyRange", "Lake", "LakeNotFound", "SkippedDaysWarning", "UnknownInstrument", "open"]

Day = dt.date | dt.datetime


def _in_lake_context(method: Callable[..., R]) -> Callable[..., R]:
    """`method` run in its lake's core context (the key and encryption `open` found)."""

    @functools.wraps(method)
    def in_context(self: Lake, *args: Any, **kwargs: Any) -> R:
        with context.using(self.context):
            return method(self, *args, **kwargs)

    return in_context


class Lake:
    """One data directory's lake and warehouse. Ranges: a date reads whole UTC days (`end` included,
    `end` defaults to `start`); datetimes read [start, end) on the receive clock (bars: `bar_start`)."""

    def __init__(self, data_dir: Path, verdicts: DayVerdicts, lake_context: context.CoreContext | None = None) -> None:
        self.reader = LakeReader(data_dir, verdicts)
        self.verified = getattr(verdicts, "available", True)
        # what its reads need (`open` finds the key and encryption); by default the caller's context
        self.context = lake_context if lake_context is not None else context.current()

    @property
    def data_dir(self) -> Path:
        return self.reader.data_dir

    @_in_lake_context
    def instruments(self, table: str = "books") -> list[str]:
        """EXCHANGE:SYMBOL of every instrument with files in `table` (books, trades, book_delta_v2, bars)."""
        return self.reader.instruments(table)

    @_in_lake_context
    def books(
        self,
        instruments: str | Iterable[str],
        start: Day,
        end: Day | None = None,
        columns: Sequence[str] | None = None,
        include_failed: bool = False,
    ) -> pl.LazyFrame:
        """Rebuilt books (`lake/books`): exact decimals, file (replay) order per instrument-day."""
        return self._scan("books", instruments, start, end, columns, include_failed)

    @_in_lake_context
    def trades(
        self,
        instruments: str | Iterable[str],
        start: Day,
        end: Day | None = None,
        columns: Sequence[str] | None = None,
        include_failed: bool = False,
    ) -> pl.LazyFrame:
        """Raw trades with `price` and `quantity` as exact decimals on the instrument's grid."""
        return self._scan("trades", instruments, start, end, columns, include_failed)

    @_in_lake_context
    def deltas(
        self,
        instruments: str | Iterable[str],
        start: Day,
        end: Day | None = None,
        columns: Sequence[str] | None = None,
        include_failed: bool = False,
    ) -> pl.LazyFrame:
        """Raw book deltas (`book_delta_v2`) with `price` and `size` as exact decimals on the grid."""
        return self._scan("book_delta_v2", instruments, start, end, columns, include_failed)

    @_in_lake_context
    def bars(
        self,
        interval: str,
        instruments: str | Iterable[str],
        start: Day,
        end: Day | None = None,
        columns: Sequence[str] | None = None,
        include_failed: bool = False,
    ) -> pl.LazyFrame:
        """OHLCV bars of one interval (`1m`, `5m`, ...), sorted by `bar_start` within each day."""
        frame = self._scan("bars", instruments, start, end, None, include_failed).filter(pl.col("interval") == interval)
        return frame if columns is None else frame.select(list(columns))

    @_in_lake_context
    def reports(
        self,
        instruments: str | Iterable[str] | None,
        start: dt.date,
        end: dt.date | None = None,
        table: str = "validation_reports",
        columns: Sequence[str] | None = None,
    ) -> pl.LazyFrame:
        """A warehouse table by instrument-day: validation_reports(_hourly), pipeline_metrics(_hourly),
        ohlcv_bars_summary. Every day is returned, failed ones too: the reports say why they failed."""
        return self.reader.reports(instruments, start, end, table, columns)

    @_in_lake_context
    def book_at(
        self,
        instrument: str,
        times: pl.Series | Sequence[object],
        columns: Sequence[str] = asof.TOP_OF_BOOK,
        include_failed: bool = False,
    ) -> pl.DataFrame:
        """The last synced book received at or before each instant (datetimes or int64 ns)."""
        return asof.book_at(self.reader, instrument, times, columns, include_failed)

    @_in_lake_context
    def trades_with_book(
        self,
        instrument: str,
        start: Day,
        end: Day | None = None,
        trade_columns: Sequence[str] | None = None,
        book_columns: Sequence[str] = asof.TOP_OF_BOOK,
        include_failed: bool = False,
    ) -> pl.DataFrame:
        """Each trade with the book prevailing when it was received (an as-of join on received_time)."""
        return asof.trades_with_book(self.reader, instrument, start, end, trade_columns, book_columns, include_failed)

    def replay(
        self,
        instrument: str,
        start: Day,
        end: Day | None = None,
        columns: Sequence[str] | None = None,
        batch_rows: int = replay_module.REPLAY_BATCH_ROWS,
        include_failed: bool = False,
    ) -> Iterator[pl.DataFrame]:
        """Book states in replay order, `batch_rows` at a time (bounded memory)."""
        with context.using(self.context):
            batches = replay_module.replay(self.reader, instrument, start, end, columns, batch_rows, include_failed)
        return context.bound_iterator(self.context, batches)

    def _scan(self, table, instruments, start, end, columns, include_failed) -> pl.LazyFrame:
        return self.reader.scan(table, instruments, start, end, columns, include_failed)


def open(  # noqa: A001 - the read API's one verb, as `builtins.open` is for files
    data_dir: str | os.PathLike[str],
    *,
    master_key: str | None = None,
    instance: dg.DagsterInstance | None = None,
) -> Lake:
    """Open the lake under `data_dir` (the pipeline's PIPELINE_DATA_DIR).

    `master_key` (base64, as PIPELINE_MASTER_KEY; the environment's wins when set) reads an encrypted
    lake. `instance` is the Dagster instance whose run history judges the days; by default the one of
    DAGSTER_HOME when that is set, else none (every day with a file is read, with a warning).
    """
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        what = "is not a directory" if data_dir.exists() else "does not exist"
        raise LakeNotFound(f"{data_dir} {what}: open() takes the pipeline's data directory (PIPELINE_DATA_DIR)")
    if not (data_dir / "lake").is_dir():
        raise LakeNotFound(
            f"{data_dir / 'lake'} does not exist: {data_dir} is not a pipeline data directory (PIPELINE_DATA_DIR), "
            "or nothing has been written to its lake yet"
        )
    return Lake(data_dir, _verdicts(instance), _lake_context(data_dir / "lake", master_key))


def _lake_context(lake_dir: Path, master_key: str | None) -> context.CoreContext:
    """The core context the lake's reads need: decrypting when its files are encrypted (their magic says so)."""
    sample = sample_lake_file(lake_dir)
    if sample is None:
        return context.current()
    with builtins.open(sample, "rb") as fh:
        encrypted = fh.read(4) == ENCRYPTED_MAGIC
    found = replace(context.current(), lake_encrypted=encrypted)
    if encrypted:
        if master_key is not None:
            found = replace(found, master_key=master_key)
        with context.using(found):
            crypto.default_master_key()  # MasterKeyError now, naming PIPELINE_MASTER_KEY, rather than at a read
    return found


def _verdicts(instance: dg.DagsterInstance | None) -> DayVerdicts:
    if instance is None and not os.environ.get("DAGSTER_HOME"):
        warnings.warn(
            SkippedDaysWarning(
                "DAGSTER_HOME is not set: no run history to say which days failed their blocking checks, "
                "so every day with a file will be read"
            ),
            stacklevel=3,
        )
        return NoRunHistory()
    import dagster as dg  # only with a run history: reading the lake needs no Dagster

    from market_pipeline.defs.common.day_outcomes import RunHistory

    return RunHistory(instance if instance is not None else dg.DagsterInstance.get())

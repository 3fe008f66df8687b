"""Lazy reads of the lake by instrument and range: one polars scan per instrument-day file, so a read
opens only the files of the days asked for and, through polars' projection push-down, only the
columns selected. Days that did not pass their blocking checks are left out (with a warning naming
them and why) unless `include_failed=True`."""

from __future__ import annotations

import datetime as dt
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from market_pipeline.core.lake import parquet_io, warehouse
from market_pipeline.core.lake.warehouse import WarehouseTarget
from market_pipeline.core.read import partitions
from market_pipeline.core.read.errors import (
    INCLUDE_FAILED_ARGUMENT,
    EmptyRange,
    SkippedDaysWarning,
    UnknownInstrument,
    describe_days,
)
from market_pipeline.core.read.partitions import Instrument
from market_pipeline.core.read.ranges import TimeRange
from market_pipeline.core.read.verdicts import DayVerdicts

HIVE_COLUMNS = ("exchange", "symbol", "dt")
# The time axis a range selects on, per table: the receive clock (what a trader could have known
# then; books rows are emitted on it), bars by their start.
TIME_COLUMNS = {
    "trades": "received_time",
    "book_delta_v2": "received_time",
    "book": "received_time",
    "books": "received_time",
    "bars": "bar_start",
}
# Raw float columns put on the instrument's decimal grid, as (column, "price" or "size").
RAW_DECIMALS = {
    "trades": (("price", "price"), ("quantity", "size")),
    "book_delta_v2": (("price", "price"), ("size", "size")),
}
NO_FILE = "no file (the day was not materialized, or the source had no data for it)"


@dataclass(frozen=True)
class DayFile:
    instrument: Instrument
    day: dt.date
    path: Path


def instrument_keys(instruments: str | Iterable[str]) -> list[str]:
    return [instruments] if isinstance(instruments, str) else list(instruments)


class LakeReader:
    """Reads one data directory's lake and warehouse; `verdicts` says which days passed their checks."""

    def __init__(self, data_dir: Path, verdicts: DayVerdicts) -> None:
        self.data_dir = Path(data_dir)
        self.lake_dir = self.data_dir / "lake"
        self.warehouse = WarehouseTarget(self.data_dir / "warehouse.duckdb")
        self.verdicts = verdicts

    # --- which files -----------------------------------------------------------------------------

    def instruments(self, table: str = "books") -> list[str]:
        return [i.key for i in partitions.instruments(self.lake_dir, table)]

    def day_files(
        self,
        table: str,
        instruments: str | Iterable[str],
        span: TimeRange,
        include_failed: bool = False,
        include_failed_hint: str = INCLUDE_FAILED_ARGUMENT,
    ) -> list[DayFile]:
        """The files of the instrument-days to read, in instrument then day order; warns naming the
        days left out, EmptyRange when none is left (suggesting `include_failed_hint`, the way the
        caller's user asks for failed days: the Python argument, or the CLI's flag)."""
        found: list[DayFile] = []
        left_out: dict[str, dict[dt.date, str]] = {}
        for key in instrument_keys(instruments):
            instrument = partitions.require_instrument(self.lake_dir, table, key)
            present = partitions.days_with_files(self.lake_dir, table, instrument, span.days)
            # The run history's reason for a day without a file (skipped, failed upstream) says more.
            judged = self.verdicts.unusable(table, key, span.days)
            reasons = {
                day: "; ".join(filter(None, [NO_FILE, judged.get(day)])) for day in span.days if day not in present
            }
            if not include_failed:
                reasons |= {day: why for day, why in judged.items() if day in present}
            found += [
                DayFile(instrument, day, partitions.day_file(self.lake_dir, table, instrument, day))
                for day in present
                if day not in reasons
            ]
            if reasons:
                left_out[key] = reasons
        text = "\n".join(f"{key} {table}:\n{describe_days(reasons)}" for key, reasons in left_out.items())
        if not found:
            hint = "" if include_failed else f" ({include_failed_hint} returns days that failed their checks)"
            raise EmptyRange(f"nothing to read in {span}{hint}:\n{text}")
        if left_out:
            warnings.warn(SkippedDaysWarning(f"days left out of the read:\n{text}"), stacklevel=3)
        return found

    # --- scans -----------------------------------------------------------------------------------

    def scan(
        self,
        table: str,
        instruments: str | Iterable[str],
        start: dt.date | dt.datetime,
        end: dt.date | dt.datetime | None = None,
        columns: Sequence[str] | None = None,
        include_failed: bool = False,
    ) -> pl.LazyFrame:
        """The rows of `table` for the instruments and range, as one LazyFrame over the day files."""
        span = TimeRange.of(start, end)
        files = self.day_files(table, instruments, span, include_failed)
        time_column = TIME_COLUMNS[table]
        frames = []
        for f in files:
            frame = parquet_io.scan(f.path).with_columns(
                pl.lit(f.instrument.exchange).alias("exchange"),
                pl.lit(f.instrument.symbol).alias("symbol"),
                pl.lit(f.day).alias("dt"),
            )
            frames.append(self._on_grid(table, f, frame))
        frame = pl.concat(frames, how="diagonal_relaxed") if len(frames) > 1 else frames[0]
        if span.start_ns is not None:
            frame = frame.filter(pl.col(time_column) >= _bound(table, span.start_ns))
        if span.end_ns is not None:
            frame = frame.filter(pl.col(time_column) < _bound(table, span.end_ns))
        if columns is not None:
            frame = frame.select(list(columns))
        return frame

    def _on_grid(self, table: str, f: DayFile, frame: pl.LazyFrame) -> pl.LazyFrame:
        """Raw float prices and sizes as exact decimals on the instrument's grid (the books' scales)."""
        if table not in RAW_DECIMALS:
            return frame
        scales = self.grid_scales(f.instrument)
        if scales is None:
            return frame
        return frame.with_columns(
            pl.col(column).cast(pl.Decimal(18, scales[kind])) for column, kind in RAW_DECIMALS[table]
        )

    def grid_scales(self, instrument: Instrument) -> dict[str, int] | None:
        """{"price": decimals, "size": decimals} of the instrument's grid, from a books file's schema
        (the pipeline's own record of the tick and lot); None without a books file."""
        root = partitions.table_root(self.lake_dir, "books")
        folder = root / f"exchange={instrument.exchange}" / f"symbol={instrument.symbol}"
        sample = next(iter(sorted(folder.glob("dt=*/data.parquet"))), None)
        if sample is None:
            return None
        schema = parquet_io.read_schema(sample)
        return {"price": schema.field("bid_0_price").type.scale, "size": schema.field("bid_0_size").type.scale}

    # --- warehouse ---------------------------------------------------------------------------------

    def reports(
        self,
        instruments: str | Iterable[str] | None,
        start: dt.date,
        end: dt.date | None = None,
        table: str = "validation_reports",
        columns: Sequence[str] | None = None,
    ) -> pl.LazyFrame:
        """Rows of a warehouse table keyed by dt, exchange and symbol (validation_reports(_hourly),
        pipeline_metrics(_hourly), ohlcv_bars_summary) for the instruments and days."""
        span = TimeRange.of(start, end)
        if not self.warehouse.exists():
            raise EmptyRange(
                f"{self.warehouse.describe()} does not exist: no pipeline run has written reports here yet"
            )
        wanted = [Instrument.parse(key) for key in instrument_keys(instruments)] if instruments is not None else []
        with warehouse.connect(self.warehouse, read_only=True) as con:
            rows = con.execute(
                "SELECT table_name FROM duckdb_tables() "
                "WHERE database_name = current_database() AND schema_name = 'main'"
            ).fetchall()
            known = {name for (name,) in rows}
            if table not in known:
                raise EmptyRange(
                    f"{self.warehouse.describe()} has no table main.{table} (tables: {', '.join(sorted(known))})"
                )
            where = ["dt BETWEEN ? AND ?"]
            params: list[object] = [span.first_day, span.last_day]
            if wanted:
                where.append("(" + " OR ".join("(exchange = ? AND symbol = ?)" for _ in wanted) + ")")
                params += [value for i in wanted for value in (i.exchange, i.symbol)]
            select = ", ".join(f'"{c}"' for c in columns) if columns else "*"
            frame = con.execute(
                f"SELECT {select} FROM main.{table} WHERE {' AND '.join(where)} ORDER BY ALL", params
            ).pl()
        missing = (
            [i.key for i in wanted if frame.filter(exchange=i.exchange, symbol=i.symbol).is_empty()]
            if (columns is None or {"exchange", "symbol"} <= set(columns))
            else []
        )
        if missing:
            raise UnknownInstrument(f"main.{table} has no row for {', '.join(missing)} in {span}")
        return frame.lazy()


def _bound(table: str, ns: int) -> pl.Expr:
    """A range bound in the type of the table's time column (bars: a UTC timestamp)."""
    if table == "bars":
        return pl.lit(ns).cast(pl.Datetime("ns", "UTC"))
    return pl.lit(ns)

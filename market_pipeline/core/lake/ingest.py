"""Schema-check vendor files on the way into the raw lake.

A file that cannot be trusted as a whole (unreadable, truncated, missing columns, wrong types)
is rejected and quarantined. A readable file whose individual rows are bad (NaN or negative
prices, null times, rows far outside their day) keeps its good rows; the bad rows go to the
quarantine with their row number and reason. Nothing is dropped silently.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from market_pipeline.core.lake.files import copy_file_atomic, write_parquet_atomic, write_text_atomic
from market_pipeline.core.lake.paths import partition_dir, quarantine_dir
from market_pipeline.core.lake.schemas import (
    NULLABLE_COLUMNS,
    OPTIONAL_COLUMNS,
    PRICE_COLUMNS,
    SIZE_COLUMNS,
    TABLE_SCHEMAS,
    VENDOR_ALIASES,
)

NS_PER_DAY = 86_400 * 1_000_000_000
TIME_COLUMNS = ("origin_time", "received_time")


class FileRejected(Exception):
    """A vendor file that cannot be imported; `reason` says why."""

    def __init__(self, path: Path, reason: str):
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: {reason}")


@dataclass
class CheckedFile:
    path: Path
    good: pl.DataFrame
    bad: pl.DataFrame  # the rejected rows, with _source_file, _row and _reason columns


def _read_parquet(path: Path) -> pa.Table:
    try:
        return pq.read_table(path)
    except (pa.ArrowException, OSError) as exc:
        raise FileRejected(path, f"unreadable Parquet (corrupt or truncated): {exc}") from None


def _normalise_time(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """Vendor times come as int64 ns or as Arrow timestamps; store int64 ns since the epoch."""
    if pa.types.is_timestamp(column.type):
        return column.cast(pa.timestamp("ns", tz=column.type.tz)).cast(pa.int64())
    return column


def _normalise(path: Path, table: pa.Table, expected: dict[str, pl.DataType]) -> pl.DataFrame:
    renames = {name: VENDOR_ALIASES.get(name, name) for name in table.column_names}
    targets = list(renames.values())
    clashes = sorted({t for t in targets if targets.count(t) > 1})
    if clashes:
        raise FileRejected(path, f"both vendor spellings present for column(s) {clashes}")
    table = table.rename_columns([renames[n] for n in table.column_names])
    for name in TIME_COLUMNS:
        if name in table.column_names:
            index = table.column_names.index(name)
            table = table.set_column(index, name, _normalise_time(table.column(name)))
    missing = [name for name in expected if name not in table.column_names]
    if missing:
        raise FileRejected(path, f"missing column(s) {missing}")
    df = pl.from_arrow(table.select(list(expected)))
    assert isinstance(df, pl.DataFrame)
    casts = []
    for name, dtype in expected.items():
        actual = df.schema[name]
        if actual == dtype:
            continue
        numeric_ok = actual.is_numeric() and dtype.is_numeric()
        id_to_text = name == "trade_id" and (actual.is_integer() or actual == pl.String)
        if not (numeric_ok or id_to_text or (actual == pl.Null)):
            raise FileRejected(path, f"column {name!r} has type {actual}, expected {dtype}")
        casts.append(pl.col(name).cast(dtype, strict=True))
    if casts:
        try:
            df = df.with_columns(casts)
        except pl.exceptions.PolarsError as exc:
            raise FileRejected(path, f"cannot convert columns to the lake schema: {exc}") from None
    return df


def _row_problems(df: pl.DataFrame, day: dt.date, tolerance_ns: int) -> pl.Expr:
    """An expression giving each row's first problem, or null for a good row."""
    day_start = int(dt.datetime.combine(day, dt.time(), dt.UTC).timestamp()) * 1_000_000_000
    checks: list[tuple[pl.Expr, str]] = []
    for name in TIME_COLUMNS:
        if name in df.columns:
            checks.append((pl.col(name).is_null(), f"{name} is null"))
    if "received_time" in df.columns:
        outside = (pl.col("received_time") < day_start - tolerance_ns) | (
            pl.col("received_time") >= day_start + NS_PER_DAY + tolerance_ns
        )
        checks.append((outside, f"received_time outside {day.isoformat()} (UTC)"))
    for name in df.columns:
        is_level = name.startswith(("bid_", "ask_")) and name.count("_") == 2  # book level column
        kind = name.rsplit("_", 1)[-1] if is_level else name
        if not is_level and name not in TIME_COLUMNS and name not in NULLABLE_COLUMNS:
            # Only book levels may be absent (a side with fewer than 20 levels).
            checks.append((pl.col(name).is_null(), f"{name} is null"))
        if name in PRICE_COLUMNS or kind == "price":
            bad = pl.col(name).is_nan() | pl.col(name).is_infinite() | (pl.col(name) <= 0)
            checks.append((bad, f"{name} is NaN, infinite or not positive"))
        elif name in SIZE_COLUMNS or kind == "size":
            bad = pl.col(name).is_nan() | pl.col(name).is_infinite() | (pl.col(name) < 0)
            checks.append((bad, f"{name} is NaN, infinite or negative"))
    if "side" in df.columns:
        checks.append((~pl.col("side").is_in(["buy", "sell"]), "side is not buy/sell"))
    expr = pl.lit(None, dtype=pl.String)
    for condition, reason in reversed(checks):
        # Null comparisons (absent book levels) are not problems: fill them as False.
        expr = pl.when(condition.fill_null(False)).then(pl.lit(reason)).otherwise(expr)
    return expr


def check_file(path: Path, table: str, day: dt.date, tolerance_ns: int) -> CheckedFile:
    """Read one vendor file into the lake schema of `table`, splitting off bad rows."""
    arrow = _read_parquet(path)
    optional = OPTIONAL_COLUMNS.get(table, {})
    expected = {**TABLE_SCHEMAS[table], **{n: t for n, t in optional.items() if n in arrow.column_names}}
    df = _normalise(path, arrow, expected)
    problems = _row_problems(df, day, tolerance_ns)
    flagged = df.with_columns(problems.alias("_reason")).with_row_index("_row")
    bad = flagged.filter(pl.col("_reason").is_not_null()).with_columns(pl.lit(str(path)).alias("_source_file"))
    if bad.is_empty():
        return CheckedFile(path, df, bad)
    good = flagged.filter(pl.col("_reason").is_null()).drop("_reason", "_row")
    return CheckedFile(path, good, bad)


def quarantine_file(
    lake_dir: Path, table: str, exchange: str, symbol: str, day: dt.date, rejected: FileRejected, run_id: str
) -> Path:
    """Copy a rejected vendor file into the quarantine with a reason file beside it."""
    target_dir = partition_dir(quarantine_dir(lake_dir), table, exchange, symbol, day)
    target = target_dir / rejected.path.name
    copy_file_atomic(rejected.path, target)
    reason = {
        "source_file": str(rejected.path),
        "reason": rejected.reason,
        "table": table,
        "exchange": exchange,
        "symbol": symbol,
        "dt": day.isoformat(),
        "run_id": run_id,
        "quarantined_at": dt.datetime.now(dt.UTC).isoformat(),
    }
    write_text_atomic(target.with_name(target.name + ".reason.json"), json.dumps(reason, indent=2))
    return target


def record_rejected_rows(
    lake_dir: Path, table: str, exchange: str, symbol: str, day: dt.date, bad: pl.DataFrame
) -> Path | None:
    """Keep the rejected rows of the partition's latest import (with reasons) in the quarantine.

    The file always describes the import that produced the partition now in the lake, so an
    import without bad rows removes the file an earlier import left.
    """
    target = partition_dir(quarantine_dir(lake_dir), table, exchange, symbol, day) / "rejected_rows.parquet"
    if bad.is_empty():
        target.unlink(missing_ok=True)
        return None
    write_parquet_atomic(bad, target)
    return target

"""Tardis.dev downloadable CSV files -> Crypto Lake shaped lake tables.

Files are named as the tardis-dev client writes them, ``{exchange}_{data_type}_{YYYY-MM-DD}_{SYMBOL}.csv.gz``
(plain ``.csv`` is read too). Times are microseconds since the epoch: ``timestamp`` is the
exchange's time, ``local_timestamp`` Tardis's receive time. docs/data-formats.md ("Tardis.dev")
gives the mapping column by column:

- ``incremental_book_L2`` -> ``book_delta_v2``: one row per level update; rows sharing
  (local_timestamp, timestamp, is_snapshot), in file order, form one message and get one
  synthesized sequence number (Tardis has none); ``is_snapshot`` is kept.
- ``book_snapshot_25`` -> ``book``: the first 20 levels a side; each row carries the sequence
  number of the last delta message at or before its local_timestamp (ties on local_timestamp:
  the last one whose timestamp is not later than the snapshot's).
- ``trades`` -> ``trades``.

Anything malformed (bad header, missing column, short or long row, unparsable number, truncated
gzip, empty required value, NaN/infinite/non-positive price, negative amount, unknown side, a
row naming another exchange or symbol) raises ``TardisFormatError`` naming the file and, where
it can, the line (line 1 is the header).
"""

from __future__ import annotations

import csv
import datetime as dt
import gzip
import shutil
import tempfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from market_pipeline.core.errors import InputDataError
from market_pipeline.core.lake.schemas import BOOK_DELTA_SCHEMA, BOOK_LEVELS, BOOK_SCHEMA, TRADES_SCHEMA

# Lake table -> the Tardis data type it is read from.
DATA_TYPES: dict[str, str] = {
    "trades": "trades",
    "book": "book_snapshot_25",
    "book_delta_v2": "incremental_book_L2",
}
SNAPSHOT_LEVELS = 25  # levels a side in book_snapshot_25; the lake keeps the first BOOK_LEVELS
US = 1_000  # ns per microsecond
# Synthesized sequence numbers: day number since the epoch x stride + message ordinal (from 1),
# so that they grow across days too (a previous day's checkpoint then continues the replay).
SEQUENCE_DAY_STRIDE = 10**12
_EPOCH = dt.date(1970, 1, 1)

L2_COLUMNS = ["exchange", "symbol", "timestamp", "local_timestamp", "is_snapshot", "side", "price", "amount"]
TRADES_COLUMNS = ["exchange", "symbol", "timestamp", "local_timestamp", "id", "side", "price", "amount"]


def snapshot_columns(levels: int = SNAPSHOT_LEVELS) -> list[str]:
    """book_snapshot_N header: asks[0].price, asks[0].amount, bids[0].price, bids[0].amount, ..."""
    return ["exchange", "symbol", "timestamp", "local_timestamp"] + [
        f"{side}[{i}].{field}" for i in range(levels) for side in ("asks", "bids") for field in ("price", "amount")
    ]


_TYPES: dict[str, pl.DataType] = {
    "exchange": pl.String(),
    "symbol": pl.String(),
    "timestamp": pl.Int64(),
    "local_timestamp": pl.Int64(),
    "is_snapshot": pl.Boolean(),
    "side": pl.String(),
    "price": pl.Float64(),
    "amount": pl.Float64(),
    "id": pl.String(),
}
_SIDES = {"incremental_book_L2": ("bid", "ask"), "trades": ("buy", "sell", "unknown")}


def file_name(exchange_id: str, data_type: str, day: dt.date, symbol: str, compressed: bool = True) -> str:
    """The tardis-dev client's default file name."""
    return f"{exchange_id}_{data_type}_{day.isoformat()}_{symbol}.csv" + (".gz" if compressed else "")


def day_sequence_base(day: dt.date) -> int:
    """Sequence numbers of `day`'s messages are this plus 1, 2, ..."""
    return (day - _EPOCH).days * SEQUENCE_DAY_STRIDE


class TardisFormatError(InputDataError, ValueError):
    """A Tardis CSV file that cannot be read as its data type; names the file and the line."""

    def __init__(self, path: Path, line: int | None, reason: str):
        self.path = path
        self.line = line
        self.reason = reason
        where = f"{path}: line {line}" if line is not None else str(path)
        super().__init__(f"{where}: {reason}")


# --- reading -------------------------------------------------------------------------------


@contextmanager
def plain_csv(path: Path, scratch: Path | None = None) -> Iterator[Path]:
    """The file as plain CSV: a `.gz` file is decompressed to a temporary file first (streamed,
    so a truncated or corrupt gzip is found before anything is parsed)."""
    if not path.name.endswith(".gz"):
        yield path
        return
    if scratch is not None:
        scratch.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=scratch, prefix=".tardis-") as tmp:
        target = Path(tmp) / path.name.removesuffix(".gz")
        try:
            with gzip.open(path, "rb") as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
        except (OSError, EOFError, zlib.error) as exc:  # BadGzipFile is an OSError
            raise TardisFormatError(path, None, f"truncated or corrupt gzip: {exc}") from None
        yield target


def _header(path: Path, plain: Path, required: list[str]) -> list[str]:
    with open(plain, "rb") as fh:
        first = fh.readline()
        if not first:
            raise TardisFormatError(path, None, "empty file (no header)")
        fh.seek(0, 2)
        if fh.tell() > len(first):
            fh.seek(-1, 2)
            if fh.read(1) != b"\n":
                raise TardisFormatError(path, None, "the last line does not end with a newline (truncated file?)")
    try:
        header = first.decode("utf-8").rstrip("\r\n").split(",")
    except UnicodeDecodeError:
        raise TardisFormatError(path, 1, "the header is not UTF-8 text") from None
    duplicated = sorted({c for c in header if header.count(c) > 1})
    if duplicated:
        raise TardisFormatError(path, 1, f"duplicated column(s) {duplicated} in the header")
    missing = [c for c in required if c not in header]
    if missing:
        raise TardisFormatError(path, 1, f"missing column(s) {missing} in the header {header[:8]}...")
    return header


def _column_type(name: str) -> pl.DataType:
    return _TYPES.get(name, pl.Float64())  # level columns of book snapshots are numbers


def _locate_bad_value(path: Path, plain: Path, header: list[str], wanted: list[str]) -> TardisFormatError | None:
    """The first line whose shape or values do not parse, for a clear error (slow, only on failure)."""
    index = {name: header.index(name) for name in wanted}
    with open(plain, newline="", encoding="utf-8", errors="replace") as fh:
        reader = csv.reader(fh)
        next(reader, None)
        for line_no, row in enumerate(reader, start=2):
            if len(row) != len(header):
                return TardisFormatError(path, line_no, f"{len(row)} fields where the header has {len(header)}")
            for name, i in index.items():
                value, kind = row[i], _column_type(name)
                if value == "":
                    continue  # empty values are reported by the value checks
                try:
                    if kind == pl.Int64():
                        int(value)
                    elif kind == pl.Float64():
                        float(value)
                    elif kind == pl.Boolean() and value not in ("true", "false"):
                        raise ValueError
                except ValueError:
                    return TardisFormatError(path, line_no, f"column {name!r}: {value!r} is not {_kind_name(kind)}")
    return None


def _kind_name(kind: pl.DataType) -> str:
    return {pl.Int64(): "an integer", pl.Float64(): "a number", pl.Boolean(): "true/false"}.get(kind, "text")


def read_tardis_csv(
    path: Path, required: list[str], not_null: list[str] | None = None, scratch: Path | None = None
) -> pl.DataFrame:
    """The `required` columns of a Tardis CSV, typed; `not_null` (default: all) may not be empty."""
    not_null = required if not_null is None else not_null
    with plain_csv(path, scratch) as plain:
        header = _header(path, plain, required)
        wanted = required
        try:
            df = pl.read_csv(
                plain,
                has_header=True,
                columns=wanted,
                schema_overrides={name: _column_type(name) for name in wanted},
                infer_schema=False,
            )
        except (pl.exceptions.PolarsError, OSError, UnicodeDecodeError) as exc:
            located = _locate_bad_value(path, plain, header, wanted)
            raise (located or TardisFormatError(path, None, f"unparsable CSV: {str(exc).splitlines()[0]}")) from None
        # Polars reads a short row with nulls at its end: a short row is an error, not empty values.
        nulls = df.select(pl.any_horizontal(pl.col(c).is_null() for c in not_null)).to_series()
        if nulls.any():
            located = _locate_bad_value(path, plain, header, wanted)
            if located is not None:
                raise located
    return df


def _first_problem(path: Path, df: pl.DataFrame, checks: list[tuple[pl.Expr, str]]) -> None:
    """Raise for the first row (in file order) failing any check, naming its line."""
    if df.is_empty() or not checks:
        return
    expr = pl.lit(None, dtype=pl.String)
    for condition, reason in reversed(checks):
        expr = pl.when(condition.fill_null(False)).then(pl.lit(reason)).otherwise(expr)
    flagged = df.select(expr.alias("reason")).with_row_index("row").filter(pl.col("reason").is_not_null())
    if flagged.height:
        row, reason = flagged.row(0)
        raise TardisFormatError(path, int(row) + 2, reason)


def _common_checks(
    df: pl.DataFrame, required: list[str], exchange: str | None, symbol: str | None
) -> list[tuple[pl.Expr, str]]:
    checks: list[tuple[pl.Expr, str]] = [(pl.col(c).is_null(), f"empty {c}") for c in required]
    if exchange is not None:
        checks.append((pl.col("exchange") != exchange, f"exchange is not {exchange!r} (the file name's)"))
    if symbol is not None:
        other_symbol = pl.col("symbol").str.to_uppercase() != symbol.upper()
        checks.append((other_symbol, f"symbol is not {symbol!r} (the file name's)"))
    for name in ("timestamp", "local_timestamp"):
        checks.append((pl.col(name) <= 0, f"{name} is not a positive number of microseconds"))
    return checks


def _price_checks(column: str) -> list[tuple[pl.Expr, str]]:
    c = pl.col(column)
    return [(c.is_nan() | c.is_infinite() | (c <= 0), f"{column} is NaN, infinite or not positive")]


def _amount_checks(column: str) -> list[tuple[pl.Expr, str]]:
    c = pl.col(column)
    return [(c.is_nan() | c.is_infinite() | (c < 0), f"{column} is NaN, infinite or negative")]


def _side_checks(data_type: str) -> list[tuple[pl.Expr, str]]:
    sides = _SIDES[data_type]
    return [(~pl.col("side").is_in(list(sides)), f"side is not one of {'/'.join(sides)}")]


# --- the three data types ------------------------------------------------------------------


@dataclass(frozen=True)
class Messages:
    """The delta messages of a day, in file order: what snapshots are aligned against."""

    local_timestamp: np.ndarray  # int64 µs, running maximum (file order)
    timestamp: np.ndarray  # int64 µs
    sequence_number: np.ndarray  # int64

    @classmethod
    def empty(cls) -> Messages:
        return cls(*(np.empty(0, np.int64) for _ in range(3)))


def read_incremental_book_l2(
    path: Path, day: dt.date, exchange: str | None = None, symbol: str | None = None, scratch: Path | None = None
) -> tuple[pl.DataFrame, Messages]:
    """`incremental_book_L2` as the lake's `book_delta_v2` (with `is_snapshot`), and its messages."""
    df = read_tardis_csv(path, L2_COLUMNS, scratch=scratch)
    _first_problem(
        path,
        df,
        _common_checks(df, L2_COLUMNS, exchange, symbol)
        + _side_checks("incremental_book_L2")
        + _price_checks("price")
        + _amount_checks("amount"),
    )
    keys = [pl.col("local_timestamp"), pl.col("timestamp"), pl.col("is_snapshot")]
    starts = pl.any_horizontal(k.ne_missing(k.shift(1)) for k in keys).fill_null(True)
    df = df.with_columns(
        (pl.lit(day_sequence_base(day)) + starts.cast(pl.Int64).cum_sum()).alias("sequence_number"),
        starts.alias("_start"),
    )
    heads = df.filter(pl.col("_start"))
    messages = Messages(
        np.maximum.accumulate(heads["local_timestamp"].to_numpy()) if heads.height else np.empty(0, np.int64),
        heads["timestamp"].to_numpy(),
        heads["sequence_number"].to_numpy(),
    )
    deltas = df.select(
        (pl.col("timestamp") * US).alias("origin_time"),
        (pl.col("local_timestamp") * US).alias("received_time"),
        "sequence_number",
        (pl.col("side") == "bid").alias("side_is_bid"),
        "price",
        pl.col("amount").alias("size"),
        "is_snapshot",
    )
    return deltas.cast({**BOOK_DELTA_SCHEMA, "is_snapshot": pl.Boolean()}), messages


def snapshot_sequence(
    messages: Messages, local_timestamp: np.ndarray, timestamp: np.ndarray, day: dt.date
) -> np.ndarray:
    """Sequence number of the last delta message at or before each snapshot's local_timestamp.

    Among messages received in the same microsecond as the snapshot, the last one whose exchange
    timestamp is not later than the snapshot's (Tardis stamps a snapshot with the update that made
    it). A snapshot before the day's first message gets the day's base (before every message).
    """
    msg_l, msg_t, msg_seq = messages.local_timestamp, messages.timestamp, messages.sequence_number
    base = day_sequence_base(day)
    if not len(msg_seq):
        return np.full(len(local_timestamp), base, np.int64)
    lo = np.searchsorted(msg_l, local_timestamp, side="left")
    chosen = np.searchsorted(msg_l, local_timestamp, side="right") - 1
    # Same-microsecond receipts: walk back past messages with a later exchange time (rare).
    later = (chosen >= lo) & (msg_t[np.clip(chosen, 0, None)] > timestamp)
    for k in np.nonzero(later)[0]:
        j = chosen[k]
        while j >= lo[k] and msg_t[j] > timestamp[k]:
            j -= 1
        chosen[k] = j
    return np.where(chosen >= 0, msg_seq[np.clip(chosen, 0, None)], base).astype(np.int64)


def read_book_snapshot_25(
    path: Path,
    day: dt.date,
    messages: Messages,
    exchange: str | None = None,
    symbol: str | None = None,
    scratch: Path | None = None,
) -> pl.DataFrame:
    """`book_snapshot_25` as the lake's `book`: the first 20 levels a side, sequenced against `messages`."""
    columns = snapshot_columns(BOOK_LEVELS)
    base = columns[:4]
    df = read_tardis_csv(path, columns, not_null=base, scratch=scratch)
    checks = _common_checks(df, base, exchange, symbol)
    for i in range(BOOK_LEVELS):
        for side in ("asks", "bids"):
            price, amount = f"{side}[{i}].price", f"{side}[{i}].amount"
            checks.append((pl.col(price).is_null() != pl.col(amount).is_null(), f"{price} and {amount}: one is empty"))
            checks += _price_checks(price) + _amount_checks(amount)
    _first_problem(path, df, checks)
    sequence = snapshot_sequence(messages, df["local_timestamp"].to_numpy(), df["timestamp"].to_numpy(), day)
    levels = [
        pl.col(f"{tardis_side}[{i}].{tardis_field}").alias(f"{side}_{i}_{field}")
        for side, tardis_side in (("bid", "bids"), ("ask", "asks"))
        for i in range(BOOK_LEVELS)
        for field, tardis_field in (("price", "price"), ("size", "amount"))
    ]
    book = df.select(
        (pl.col("timestamp") * US).alias("origin_time"),
        (pl.col("local_timestamp") * US).alias("received_time"),
        pl.Series("sequence_number", sequence, dtype=pl.Int64),
        *levels,
    )
    return book.cast(BOOK_SCHEMA)  # type: ignore[arg-type]


def read_trades(
    path: Path, exchange: str | None = None, symbol: str | None = None, scratch: Path | None = None
) -> pl.DataFrame:
    """`trades` as the lake's `trades` (taker side as Tardis gives it: buy, sell or unknown)."""
    df = read_tardis_csv(path, TRADES_COLUMNS, scratch=scratch)
    _first_problem(
        path,
        df,
        _common_checks(df, TRADES_COLUMNS, exchange, symbol)
        + _side_checks("trades")
        + _price_checks("price")
        + _amount_checks("amount"),
    )
    trades = df.select(
        (pl.col("timestamp") * US).alias("origin_time"),
        (pl.col("local_timestamp") * US).alias("received_time"),
        "side",
        "price",
        pl.col("amount").alias("quantity"),
        pl.col("id").alias("trade_id"),
    )
    return trades.cast(TRADES_SCHEMA)  # type: ignore[arg-type]

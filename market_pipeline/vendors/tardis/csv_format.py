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

Files are read as streams of batches (`csv_stream`), each checked, converted and handed on as it
comes: memory is set by the batch size, not by the file. What crosses batches is carried: the
current message and the message count of the L2 file, the first line of each batch.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NamedTuple

import polars as pl

from market_pipeline.core.lake.schemas import BOOK_DELTA_SCHEMA, BOOK_LEVELS, BOOK_SCHEMA, TRADES_SCHEMA
from market_pipeline.core.read_ahead import read_ahead
from market_pipeline.vendors.tardis.csv_stream import CsvBatch, TardisFormatError, iter_csv_batches
from market_pipeline.vendors.tardis.l2_text import l2_lines
from market_pipeline.vendors.tardis.line_blocks import LineBlocks
from market_pipeline.vendors.tardis.message_heads import FollowingHeads, MessageHeads, MessageHeadsWriter
from market_pipeline.vendors.tardis.snapshot_text import snapshot_lines

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


_SIDES = {"incremental_book_L2": ("bid", "ask"), "trades": ("buy", "sell", "unknown")}


def file_name(exchange_id: str, data_type: str, day: dt.date, symbol: str, compressed: bool = True) -> str:
    """The tardis-dev client's default file name."""
    return f"{exchange_id}_{data_type}_{day.isoformat()}_{symbol}.csv" + (".gz" if compressed else "")


def day_sequence_base(day: dt.date) -> int:
    """Sequence numbers of `day`'s messages are this plus 1, 2, ..."""
    return (day - _EPOCH).days * SEQUENCE_DAY_STRIDE


# --- checks --------------------------------------------------------------------------------


class Check(NamedTuple):
    """A check of rows: `fails` flags a bad row (a null flags none: the empty-value checks name
    those), `reason` says what is wrong. `may_fail`, when given, is a cheaper aggregate of a batch
    that is true whenever some row fails (and may be true when none does)."""

    fails: pl.Expr
    reason: str
    may_fail: pl.Expr | None = None


class RowChecks:
    """The checks of a file's rows: `first_problem` raises for the first row failing any. A batch is
    first screened by one aggregate a check (`Check.may_fail`, else whether any row fails it); only a
    batch that the screen flags (a bad file's) is checked row by row, its reasons chained in the
    checks' order. Checking the first 8 M rows of the bench's L2 file took 0.31 CPU-s against 0.74
    row by row (the symbol upper-cased in every row); 200 k snapshot rows 0.20 against 0.48 (with
    their wider blocks). The expressions are built once a file: planning the reasons' chain (one
    level per check, 100+ for a snapshot) costs more than checking a batch."""

    def __init__(self, checks: list[Check]):
        self.screen = pl.any_horizontal(
            check.fails.fill_null(False).any() if check.may_fail is None else check.may_fail for check in checks
        ).alias("may_fail")
        self.any_failed = pl.any_horizontal(check.fails.fill_null(False) for check in checks)
        reason = pl.lit(None, dtype=pl.String)
        for check in reversed(checks):
            reason = pl.when(check.fails.fill_null(False)).then(pl.lit(check.reason)).otherwise(reason)
        self.reason = reason.alias("reason")

    def first_problem(self, path: Path, batch: CsvBatch) -> None:
        """Raise for the first row (in file order) of the batch failing a check, naming its line."""
        df = batch.frame
        if not df.select(self.screen).item():
            return
        failed = df.select(self.any_failed.alias("failed")).to_series().arg_true()
        if failed.len():
            first = int(failed[0])
            reason = df.slice(first, 1).select(self.reason).item()
            raise TardisFormatError(path, batch.line + first, reason)


def _common_checks(required: list[str], exchange: str | None, symbol: str | None) -> list[Check]:
    checks = [Check(pl.col(c).is_null(), f"empty {c}", pl.col(c).null_count() > 0) for c in required]
    if exchange is not None:
        checks.append(Check(pl.col("exchange") != exchange, f"exchange is not {exchange!r} (the file name's)"))
    if symbol is not None:
        # Upper-casing every row costs more than the other checks together: a batch whose symbols
        # are all the file name's as written passes without it.
        other_symbol = pl.col("symbol").str.to_uppercase() != symbol.upper()
        reason = f"symbol is not {symbol!r} (the file name's)"
        checks.append(Check(other_symbol, reason, (pl.col("symbol") != symbol).any()))
    for name in ("timestamp", "local_timestamp"):
        checks.append(Check(pl.col(name) <= 0, f"{name} is not a positive number of microseconds"))
    return checks


def _price_checks(column: str) -> list[Check]:
    c = pl.col(column)  # not finite: NaN or infinite
    return [Check(~c.is_finite() | (c <= 0), f"{column} is NaN, infinite or not positive")]


def _amount_checks(column: str) -> list[Check]:
    c = pl.col(column)
    return [Check(~c.is_finite() | (c < 0), f"{column} is NaN, infinite or negative")]


def _side_checks(data_type: str) -> list[Check]:
    sides = _SIDES[data_type]  # a few: comparing with each is cheaper than is_in
    other_side = pl.all_horizontal(pl.col("side") != side for side in sides)
    return [Check(other_side, f"side is not one of {'/'.join(sides)}")]


# --- the three data types ------------------------------------------------------------------


def iter_incremental_book_l2(
    path: Path,
    day: dt.date,
    messages: MessageHeadsWriter | None = None,
    exchange: str | None = None,
    symbol: str | None = None,
) -> Iterator[pl.DataFrame]:
    """`incremental_book_L2` as the lake's `book_delta_v2` (with `is_snapshot`), batch by batch;
    each message's head goes to `messages` (for sequencing the day's snapshots)."""
    keys = ["local_timestamp", "timestamp", "is_snapshot"]
    last_key: tuple | None = None  # the message the previous batch ended in
    count = 0  # messages before this batch
    for df in _l2_rows(path, exchange, symbol):
        # A row starts a message when its key differs from the row before it, across batches too.
        starts = pl.any_horizontal(
            pl.col(k).ne_missing(pl.col(k).shift(1, fill_value=None if last_key is None else last_key[i]))
            for i, k in enumerate(keys)
        )
        # The heads are filtered from their two columns only and the rows made in one select: a
        # filter of the whole batch (its text columns too) and a second with_columns took the first
        # 8.8 M rows of the bench day's L2 file 0.55-0.80 CPU-s against 0.21-0.27.
        df = df.with_columns(starts.alias("_start"))
        heads = df.select(pl.col("local_timestamp", "timestamp").filter(pl.col("_start")))
        if messages is not None:
            messages.append(heads["local_timestamp"].to_numpy(), heads["timestamp"].to_numpy())
        deltas = df.select(
            (pl.col("timestamp") * US).alias("origin_time"),
            (pl.col("local_timestamp") * US).alias("received_time"),
            (day_sequence_base(day) + count + pl.col("_start").cast(pl.Int64).cum_sum()).alias("sequence_number"),
            "side_is_bid",
            "price",
            pl.col("amount").alias("size"),
            "is_snapshot",
        )
        count += heads.height
        last_key = tuple(df[k][-1] for k in keys)
        yield deltas.cast({**BOOK_DELTA_SCHEMA, "is_snapshot": pl.Boolean()})


def _l2_rows(path: Path, exchange: str | None, symbol: str | None) -> Iterator[pl.DataFrame]:
    """The L2 file's checked rows: timestamp, local_timestamp, is_snapshot, side_is_bid, price, amount."""
    checks = RowChecks(
        _common_checks(L2_COLUMNS, exchange, symbol)
        + _side_checks("incremental_book_L2")
        + _price_checks("price")
        + _amount_checks("amount")
    )
    sides = (pl.col("side") == "bid").alias("side_is_bid")
    return _checked_rows(
        path,
        "incremental_book_L2",
        (exchange, symbol),
        L2_COLUMNS,
        checks,
        lambda rows: rows.select("timestamp", "local_timestamp", "is_snapshot", sides, "price", "amount"),
    )


def line_reader(path: Path, data_type: str, exchange: str, symbol: str) -> LineBlocks | None:
    """The numba reader of a `data_type` file's lines (`line_blocks`), with the file name's
    exchange and symbol; None for a data type without one (trades, read by Arrow's reader)."""
    if data_type == "incremental_book_L2":
        return l2_lines(path, L2_COLUMNS, exchange, symbol)
    if data_type == "book_snapshot_25":
        return snapshot_lines(path, snapshot_columns(), snapshot_columns(BOOK_LEVELS)[4:], exchange, symbol)
    return None


def _checked_rows(
    path: Path,
    data_type: str,
    names: tuple[str | None, str | None],
    required: list[str],
    checks: RowChecks,
    shaped: Callable[[pl.DataFrame], pl.DataFrame],
) -> Iterator[pl.DataFrame]:
    """A file's checked rows, batch by batch: read by its numba line reader (`line_reader`, when
    the file name's exchange and symbol are `names`) while its lines are in Tardis's own shape,
    then by Arrow's reader (`csv_stream`, its `required` columns `shaped` as the line reader gives
    them) from where that stopped, every value checked there (`line_blocks` says why the result is
    the same)."""
    exchange, symbol = names
    lines = line_reader(path, data_type, exchange, symbol) if exchange is not None and symbol is not None else None
    skip = 0  # rows the line reader handed on
    if lines is not None:
        # The next block is decoded on a helper thread while the caller converts this one.
        yield from read_ahead(lines.frames(), "tardis-lines")
        if lines.whole:
            return
        skip = lines.rows
    for batch in iter_csv_batches(path, required):
        if skip >= batch.frame.height:  # rows in the line reader's shape, which pass every check
            skip -= batch.frame.height
            continue
        checks.first_problem(path, batch)
        rows = batch.frame.slice(skip)
        skip = 0
        if not rows.is_empty():
            yield shaped(rows)


def iter_book_snapshot_25(
    path: Path,
    day: dt.date,
    messages: MessageHeads | FollowingHeads,
    exchange: str | None = None,
    symbol: str | None = None,
) -> Iterator[pl.DataFrame]:
    """`book_snapshot_25` as the lake's `book`, batch by batch: the first 20 levels a side,
    sequenced against the day's L2 `messages` (`message_heads.snapshot_sequence`)."""
    columns = snapshot_columns(BOOK_LEVELS)
    base = columns[:4]
    checks = _common_checks(base, exchange, symbol)
    for i in range(BOOK_LEVELS):
        for side in ("asks", "bids"):
            price, amount = f"{side}[{i}].price", f"{side}[{i}].amount"
            one_empty = pl.col(price).is_null() != pl.col(amount).is_null()
            checks.append(Check(one_empty, f"{price} and {amount}: one is empty"))
            checks += _price_checks(price) + _amount_checks(amount)
    levels = [
        pl.col(f"{tardis_side}[{i}].{tardis_field}").alias(f"{side}_{i}_{field}")
        for side, tardis_side in (("bid", "bids"), ("ask", "asks"))
        for i in range(BOOK_LEVELS)
        for field, tardis_field in (("price", "price"), ("size", "amount"))
    ]
    kept = columns[2:]  # the times and the levels, as the line reader gives them
    rows = _checked_rows(
        path, "book_snapshot_25", (exchange, symbol), columns, RowChecks(checks), lambda frame: frame.select(kept)
    )
    for df in rows:
        sequence = messages.sequence(
            df["local_timestamp"].to_numpy(), df["timestamp"].to_numpy(), day_sequence_base(day)
        )
        book = df.select(
            (pl.col("timestamp") * US).alias("origin_time"),
            (pl.col("local_timestamp") * US).alias("received_time"),
            pl.Series("sequence_number", sequence, dtype=pl.Int64),
            *levels,
        )
        yield book.cast(BOOK_SCHEMA)  # type: ignore[arg-type]


def iter_trades(path: Path, exchange: str | None = None, symbol: str | None = None) -> Iterator[pl.DataFrame]:
    """`trades` as the lake's `trades`, batch by batch (taker side as Tardis gives it: buy, sell or unknown)."""
    checks = RowChecks(
        _common_checks(TRADES_COLUMNS, exchange, symbol)
        + _side_checks("trades")
        + _price_checks("price")
        + _amount_checks("amount")
    )
    for batch in iter_csv_batches(path, TRADES_COLUMNS):
        checks.first_problem(path, batch)
        trades = batch.frame.select(
            (pl.col("timestamp") * US).alias("origin_time"),
            (pl.col("local_timestamp") * US).alias("received_time"),
            "side",
            "price",
            pl.col("amount").alias("quantity"),
            pl.col("id").alias("trade_id"),
        )
        yield trades.cast(TRADES_SCHEMA)  # type: ignore[arg-type]

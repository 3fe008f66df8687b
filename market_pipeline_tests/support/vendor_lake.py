"""A small vendor-like lake: deterministic vendor frames in either column spelling, written as
{table}/exchange=X/symbol=Y/dt=D/*.parquet (fixture `vendor_lake`)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable
from pathlib import Path

import polars as pl
import pytest

from market_pipeline.core.day_clock import day_start_ns

DEFAULT_INSTRUMENTS = (("BINANCE", "BTC-USDT"), ("BINANCE_FUTURES", "BTC-USDT-PERP"))
NS = 1_000_000_000


# Client spelling (lakeapi renames on read) and stored spelling (what is in the bucket).
CLIENT_NAMES = {
    "origin_time": "origin_time",
    "received_time": "received_time",
    "quantity": "quantity",
    "trade_id": "trade_id",
}
STORED_NAMES = {
    "origin_time": "timestamp",
    "received_time": "receipt_timestamp",
    "quantity": "amount",
    "trade_id": "id",
}


def vendor_frame(table: str, day: dt.date, rows: int, spelling: str = "client", seed: int = 0) -> pl.DataFrame:
    """A deterministic vendor-like frame for one table-day in the given column spelling."""
    names = CLIENT_NAMES if spelling == "client" else STORED_NAMES
    base = day_start_ns(day)
    step = (86_400 * NS) // (rows + 1)
    received = [base + (i + 1) * step for i in range(rows)]
    origin = [t - 1_000_000 for t in received]  # 1 ms before receipt
    mid = 60_000.0 + seed * 100
    # Prices step by 0.1, the coarsest configured tick, so every instrument's data is on its grid.
    if table == "trades":
        return pl.DataFrame(
            {
                names["origin_time"]: origin,
                names["received_time"]: received,
                "side": ["buy" if i % 2 == 0 else "sell" for i in range(rows)],
                "price": [mid + (i % 7) * 0.1 for i in range(rows)],
                names["quantity"]: [0.001 * (1 + i % 5) for i in range(rows)],
                names["trade_id"]: [str(1_000_000 + seed * 10_000 + i) for i in range(rows)],
            },
            schema={
                names["origin_time"]: pl.Int64,
                names["received_time"]: pl.Int64,
                "side": pl.String,
                "price": pl.Float64,
                names["quantity"]: pl.Float64,
                names["trade_id"]: pl.String,
            },
        )
    if table == "book_delta_v2":
        return pl.DataFrame(
            {
                names["origin_time"]: origin,
                names["received_time"]: received,
                "sequence_number": [10_000 + i for i in range(rows)],
                "side_is_bid": [i % 2 == 0 for i in range(rows)],
                "price": [mid + (-1 if i % 2 == 0 else 1) * (1 + i % 10) * 0.1 for i in range(rows)],
                "size": [0.0 if i % 9 == 8 else 0.5 + (i % 3) for i in range(rows)],
            },
            schema={
                names["origin_time"]: pl.Int64,
                names["received_time"]: pl.Int64,
                "sequence_number": pl.Int64,
                "side_is_bid": pl.Boolean,
                "price": pl.Float64,
                "size": pl.Float64,
            },
        )
    if table == "book":
        from market_pipeline.core.lake.schemas import BOOK_LEVELS

        data: dict[str, list] = {
            names["origin_time"]: origin,
            names["received_time"]: received,
            "sequence_number": [10_000 + 3 * i for i in range(rows)],
        }
        for side, sign in (("bid", -1), ("ask", 1)):
            for level in range(BOOK_LEVELS):
                # The last rows have only 15 levels: absent levels are null, which is legal.
                present = [not (i % 4 == 3 and level >= 15) for i in range(rows)]
                data[f"{side}_{level}_price"] = [(mid + sign * (level + 1) * 0.1) if ok else None for ok in present]
                data[f"{side}_{level}_size"] = [(1.0 + level) if ok else None for ok in present]
        schema = {name: (pl.Int64 if i < 3 else pl.Float64) for i, name in enumerate(data)}
        return pl.DataFrame(data, schema=schema)
    raise ValueError(f"no vendor frame for table {table!r}")


def vendor_file(root: Path, table: str, exchange: str, symbol: str, day: dt.date, name: str = "data.parquet") -> Path:
    from market_pipeline.core.lake.paths import partition_dir

    return partition_dir(root, table, exchange, symbol, day) / name


class VendorLake:
    """Writes vendor-like files laid out as {table}/exchange=X/symbol=Y/dt=D/*.parquet."""

    def __init__(self, root: Path):
        self.root = root
        self.rows: dict[tuple[str, str, str, dt.date], int] = {}

    def __call__(
        self,
        tables: Iterable[str] = ("trades", "book", "book_delta_v2"),
        instruments: Iterable[tuple[str, str]] = DEFAULT_INSTRUMENTS,
        days: Iterable[dt.date] = (),
        rows: int | Callable[[str, int, dt.date], int] = 50,
        spelling: str = "alternate",
    ) -> Path:
        """Write one file per table/instrument/day.

        `rows` is a count or a function (table, instrument index, day) -> count; `spelling` is
        "client", "stored" or "alternate" (client names for the first instrument, stored for the next...).
        """
        for table in tables:
            for index, (exchange, symbol) in enumerate(instruments):
                for day in days:
                    n = rows(table, index, day) if callable(rows) else rows
                    sp = spelling if spelling != "alternate" else ("client" if index % 2 == 0 else "stored")
                    df = vendor_frame(table, day, n, sp, seed=index)
                    path = vendor_file(self.root, table, exchange, symbol, day)
                    path.parent.mkdir(parents=True, exist_ok=True)
                    df.write_parquet(path)
                    self.rows[(table, exchange, symbol, day)] = n
        return self.root

    def path(self, table: str, exchange: str, symbol: str, day: dt.date) -> Path:
        return vendor_file(self.root, table, exchange, symbol, day)

    def rows_for_day(self, table: str, day: dt.date) -> int:
        return sum(n for (t, _, _, d), n in self.rows.items() if t == table and d == day)


@pytest.fixture
def vendor_lake(tmp_path: Path) -> VendorLake:
    root = tmp_path / "vendor"
    root.mkdir()
    return VendorLake(root)


def truncate_file(path: Path) -> None:
    """Cut a file in half, as an interrupted download would."""
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])

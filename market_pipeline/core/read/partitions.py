"""The files of a lake table by instrument and day, found by listing directories (hive layout
`exchange=X/symbol=Y/dt=D/data.parquet`), so a read opens only the files of the days it asks for."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from market_pipeline.core.lake.paths import PARTITION_FILE, partition_dir
from market_pipeline.core.read.errors import UnknownInstrument

# Lake tables by the name the read API gives them: (directory under lake/, table directory).
TABLE_ROOTS: dict[str, tuple[str, str]] = {
    "trades": ("raw", "trades"),
    "book_delta_v2": ("raw", "book_delta_v2"),
    "book": ("raw", "book"),
    "books": (".", "books"),
    "bars": (".", "bars"),
    "checkpoints": (".", "checkpoints"),
    "book_agreement": (".", "book_agreement"),
}


@dataclass(frozen=True)
class Instrument:
    exchange: str
    symbol: str

    @property
    def key(self) -> str:
        return f"{self.exchange}:{self.symbol}"

    @classmethod
    def parse(cls, key: str) -> Instrument:
        exchange, sep, symbol = key.partition(":")
        if not sep or not exchange or not symbol:
            raise UnknownInstrument(f"{key!r} is not an instrument: write EXCHANGE:SYMBOL, e.g. BINANCE:BTC-USDT")
        return cls(exchange, symbol)


def table_root(lake_dir: Path, table: str) -> Path:
    parent, name = TABLE_ROOTS[table]
    return (lake_dir / parent / name).resolve()


def instruments(lake_dir: Path, table: str) -> list[Instrument]:
    """Every instrument with a directory in the table, sorted."""
    root = table_root(lake_dir, table)
    found = []
    for exchange_dir in sorted(root.glob("exchange=*")):
        for symbol_dir in sorted(exchange_dir.glob("symbol=*")):
            found.append(Instrument(exchange_dir.name.split("=", 1)[1], symbol_dir.name.split("=", 1)[1]))
    return found


def require_instrument(lake_dir: Path, table: str, key: str) -> Instrument:
    instrument = Instrument.parse(key)
    known = instruments(lake_dir, table)
    if instrument not in known:
        names = ", ".join(i.key for i in known) or "none"
        raise UnknownInstrument(
            f"{key}: no {table} files under {table_root(lake_dir, table)} (instruments there: {names})"
        )
    return instrument


def day_file(lake_dir: Path, table: str, instrument: Instrument, day: dt.date, name: str = PARTITION_FILE) -> Path:
    parent, directory = TABLE_ROOTS[table]
    return partition_dir(lake_dir / parent, directory, instrument.exchange, instrument.symbol, day) / name


def days_with_files(lake_dir: Path, table: str, instrument: Instrument, days: list[dt.date]) -> list[dt.date]:
    return [day for day in days if day_file(lake_dir, table, instrument, day).is_file()]


def days_between(first: dt.date, last: dt.date) -> list[dt.date]:
    return [first + dt.timedelta(days=n) for n in range((last - first).days + 1)]

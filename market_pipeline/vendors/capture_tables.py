"""What the parsers of the subscribing exchanges' captures (OKX, Kraken) share on the way to the
lake's tables: the schemas of the tables they serve, one chunk's rows kept as the exchange's text
and turned into typed frames (every price and size checked to be a number), and the loop that
reads one instrument's files `CHUNK_LINES` lines at a time (memory is set by the chunk, never by a
file). Each exchange's parser says what one line adds (`ChunkedCaptureParser.line`).

Prices and sizes are the exchange's decimal strings read as float64 (correctly rounded, as
Binance's capture tables are); a value that is not a number raises `CaptureFormatError` naming
the file and line.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import polars as pl

from market_pipeline.core.lake.schemas import (
    BOOK_DELTA_SCHEMA,
    BOOK_LEVELS,
    BOOK_SCHEMA,
    BOOK_TICKER_SCHEMA,
    CAPTURE_DELTA_EXTRA_SCHEMA,
    TRADES_SCHEMA,
)
from market_pipeline.vendors.binance.capture_stream import CHUNK_LINES
from market_pipeline.vendors.capture_files import CaptureFormatError, located_lines
from market_pipeline.vendors.exchange_books import Level

DELTA_SCHEMA: dict[str, pl.DataType] = {
    **BOOK_DELTA_SCHEMA,
    **CAPTURE_DELTA_EXTRA_SCHEMA,
    "line_no": pl.Int64(),
    "is_snapshot": pl.Boolean(),
}
TICKER_SCHEMA: dict[str, pl.DataType] = {**BOOK_TICKER_SCHEMA, "line_no": pl.Int64()}
# The tables of a capture whose exchange numbers its book messages (OKX); another exchange's parser
# gives its own (`ChunkedCaptureParser.table_schemas`).
TABLE_SCHEMAS: dict[str, dict[str, pl.DataType]] = {
    "trades": TRADES_SCHEMA,
    "book_delta_v2": DELTA_SCHEMA,
    "book": BOOK_SCHEMA,
    "book_ticker": TICKER_SCHEMA,
}
_PRICED = {
    "book_delta_v2": ("price", "size"),
    "book": tuple(c for c in BOOK_SCHEMA if c.endswith(("_price", "_size"))),
    "book_ticker": ("bid_price", "bid_size", "ask_price", "ask_size"),
    "trades": ("price", "quantity"),
}


class TableRows:
    """One chunk's rows of the tables of `schemas`, as Python values (prices and sizes still the
    exchange's strings)."""

    def __init__(self, schemas: dict[str, dict[str, pl.DataType]]) -> None:
        self.schemas = schemas
        self.tables: dict[str, list[tuple]] = {name: [] for name in schemas}
        self.lines: dict[str, list[int]] = {name: [] for name in schemas}  # each row's line in its file

    def add(self, table: str, row: tuple, line_number: int) -> None:
        self.tables[table].append(row)
        self.lines[table].append(line_number)

    def frames(self, path: Path) -> dict[str, pl.DataFrame]:
        out = {}
        for name, rows in self.tables.items():
            schema = self.schemas[name]
            text = {c: pl.String() if c in _PRICED[name] else t for c, t in schema.items()}
            frame = pl.DataFrame(rows, schema=text, orient="row")
            for column in _PRICED[name]:
                values = frame.get_column(column).cast(pl.Float64, strict=False)
                refused = (values.is_null() & frame.get_column(column).is_not_null()).arg_true()
                if refused.len():
                    row = refused[0]
                    reason = f"{name}: {column} {frame.get_column(column)[row]!r} is not a number"
                    raise CaptureFormatError(path, self.lines[name][row], reason)
            out[name] = frame.cast(schema)  # type: ignore[arg-type]
        return out


def top_levels(levels: Sequence[Level]) -> list[str | None]:
    """A side's best BOOK_LEVELS (best first) as price, size, price, size, ... (None past the side's end)."""
    out: list[str | None] = []
    for i in range(BOOK_LEVELS):
        out.extend(levels[i] if i < len(levels) else (None, None))
    return out


class ChunkedCaptureParser:
    """The capture files of ONE instrument of an exchange, in time order, parsed chunk by chunk.

    `chunks()` yields each chunk's tables (`table_schemas`, `line_no` running across the files);
    the exchange's subclass reads one line into them (`line`) and tells the instrument (`instrument`)."""

    table_schemas: dict[str, dict[str, pl.DataType]]

    def __init__(self, paths: Sequence[Path], chunk_lines: int | None = None) -> None:
        self.paths = [Path(p) for p in paths]
        if not self.paths:
            raise ValueError("parsing a capture needs at least one capture file")
        self.chunk_lines = chunk_lines or CHUNK_LINES

    def line(self, rows: TableRows, line_no: int, line_number: int, recv_ns: int, body: str) -> None:
        """Add the rows of one line; ValueError (the reason) when it cannot be read."""
        raise NotImplementedError

    def instrument(self) -> tuple[str, str, str]:
        """(the exchange's market, the lake's exchange, the lake's symbol) of the lines read."""
        raise NotImplementedError

    def chunks(self) -> Iterator[dict[str, pl.DataFrame]]:
        rows, path = TableRows(self.table_schemas), self.paths[0]
        for line_no, (path, line_number, recv_ns, body) in enumerate(located_lines(self.paths)):
            try:
                self.line(rows, line_no, line_number, recv_ns, body)
            except ValueError as exc:  # json.JSONDecodeError is a ValueError
                raise CaptureFormatError(path, line_number, str(exc)) from None
            if (line_no + 1) % self.chunk_lines == 0:
                yield rows.frames(path)
                rows = TableRows(self.table_schemas)
        yield rows.frames(path)

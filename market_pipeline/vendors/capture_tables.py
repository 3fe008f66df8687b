"""What the capture sources of exchanges whose book stream starts with a snapshot (OKX, Bybit,
Kraken) share: their lake tables, the rows of one chunk, and the loop that reads their files chunk
by chunk.

Each exchange's parser (`okx/capture_tables.py`, `bybit/capture_tables.py`,
`kraken/capture_tables.py`) turns one decoded line into rows of the four tables (Kraken's parser
serves its own subset, `ChunkedCaptureParser.table_schemas`):

- `book_delta_v2`: a row per level of every book message, `is_snapshot` on a snapshot's rows (the
  generic replay clears the book before them), `line_no` the line in the files;
- `book`: the best `BOOK_LEVELS` a side of every snapshot;
- `book_ticker`: every top-of-book message with both sides;
- `trades`: every trade.

Prices and sizes are kept as the exchange's decimal strings until the chunk becomes frames, then
read as float64 (correctly rounded, as Binance's capture tables are); a text that is not a number
raises `CaptureFormatError` naming the file and line. Memory is set by `CHUNK_LINES`, never by a file.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from market_pipeline.core.lake.schemas import (
    BOOK_DELTA_SCHEMA,
    BOOK_LEVELS,
    BOOK_SCHEMA,
    BOOK_TICKER_SCHEMA,
    CAPTURE_DELTA_EXTRA_SCHEMA,
    TRADES_SCHEMA,
)
from market_pipeline.vendors.capture_figures import TopQuote
from market_pipeline.vendors.capture_files import CHUNK_LINES, CaptureFormatError, located_lines
from market_pipeline.vendors.exchange_books import Level

NS_PER_MS = 1_000_000
LINE_ORDERED = ("book_delta_v2", "book_ticker")
DELTA_SCHEMA: dict[str, pl.DataType] = {
    **BOOK_DELTA_SCHEMA,
    **CAPTURE_DELTA_EXTRA_SCHEMA,
    "line_no": pl.Int64(),
    "is_snapshot": pl.Boolean(),
}
TICKER_SCHEMA: dict[str, pl.DataType] = {**BOOK_TICKER_SCHEMA, "line_no": pl.Int64()}
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


@dataclass(frozen=True)
class LineStamp:
    """Where a line is: `line_no` across the files (the tables' line order), `line_number` 1-based
    in its file (what an error names), `recv_ns` its receive time."""

    line_no: int
    line_number: int
    recv_ns: int


class TableRows:
    """One chunk's rows of the tables of `schemas`, as Python values (prices and sizes still the
    exchange's strings)."""

    def __init__(self, schemas: dict[str, dict[str, pl.DataType]] = TABLE_SCHEMAS) -> None:
        self.schemas = schemas
        self.tables: dict[str, list[tuple]] = {name: [] for name in schemas}
        self.lines: dict[str, list[int]] = {name: [] for name in schemas}  # each row's line in its file

    def add(self, table: str, row: tuple, line_number: int) -> None:
        self.tables[table].append(row)
        self.lines[table].append(line_number)

    def add_book_message(
        self,
        at: LineStamp,
        origin: int,
        seq: int,
        prev: int | None,
        sides: tuple[list[Level], list[Level]],
        snapshot: bool,
    ) -> None:
        """A book message's `book_delta_v2` rows (bids, then asks, in the message's order; its id
        `seq` also as `first_update_id`, `prev` as `prev_update_id`) and a snapshot's `book` row."""
        bids, asks = sides
        for is_bid, levels in ((True, bids), (False, asks)):
            for price, size in levels:
                row = (origin, at.recv_ns, seq, is_bid, price, size, seq, prev, at.line_no, snapshot)
                self.add("book_delta_v2", row, at.line_number)
        if snapshot:
            self.add("book", (origin, at.recv_ns, seq, *top_levels(bids), *top_levels(asks)), at.line_number)

    def add_quote(self, at: LineStamp, origin: int, quote: TopQuote) -> None:
        """A top-of-book message's `book_ticker` row (`update_id` its sequence number); none when
        a side is empty (the table has no nulls)."""
        if quote.bids and quote.asks:
            (bid, bid_size), (ask, ask_size) = quote.bids[0], quote.asks[0]
            row = (origin, at.recv_ns, quote.seq, bid, bid_size, ask, ask_size, at.line_no)
            self.add("book_ticker", row, at.line_number)

    def frames(self, path: Path) -> dict[str, pl.DataFrame]:
        out = {}
        for name, schema in self.schemas.items():
            text = {c: pl.String() if c in _PRICED[name] else t for c, t in schema.items()}
            frame = pl.DataFrame(self.tables[name], schema=text, orient="row")
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
    """A side's best BOOK_LEVELS as price, size, price, size, ... (None past the side's end)."""
    out: list[str | None] = []
    for i in range(BOOK_LEVELS):
        out.extend(levels[i] if i < len(levels) else (None, None))
    return out


def text_field(entry: dict[str, Any], key: str) -> str:
    """A trade's field that must be a string (a price, a size, an id)."""
    value = entry.get(key)
    if not isinstance(value, str):
        raise ValueError(f"trade {key} {value!r} is not a string")
    return value


class ChunkedCaptureParser:
    """The capture files of ONE instrument, in time order, parsed chunk by chunk: `chunks()`
    yields each chunk's tables (`table_schemas`, `line_no` running across the files). A subclass
    reads one line (`line`) and names the instrument of the lines read (`instrument`); the
    exchange's name of that instrument is `instrument_id`, the first one `one_instrument` saw."""

    table_schemas: dict[str, dict[str, pl.DataType]] = TABLE_SCHEMAS  # the tables the parser serves
    line_ordered: tuple[str, ...] = LINE_ORDERED  # those whose rows keep the files' line order

    def __init__(self, paths: Sequence[Path], chunk_lines: int | None = None) -> None:
        self.paths = [Path(p) for p in paths]
        if not self.paths:
            raise ValueError("parsing a capture needs at least one capture file")
        self.chunk_lines = chunk_lines or CHUNK_LINES
        self.instrument_id: str | None = None

    def chunks(self) -> Iterator[dict[str, pl.DataFrame]]:
        rows, path = TableRows(self.table_schemas), self.paths[0]
        for line_no, (path, line_number, recv_ns, body) in enumerate(located_lines(self.paths)):
            try:
                self.line(rows, LineStamp(line_no, line_number, recv_ns), body)
            except ValueError as exc:  # json.JSONDecodeError is a ValueError
                raise CaptureFormatError(path, line_number, str(exc)) from None
            if (line_no + 1) % self.chunk_lines == 0:
                yield rows.frames(path)
                rows = TableRows(self.table_schemas)
        yield rows.frames(path)

    def follow(self, previous: ChunkedCaptureParser) -> None:
        """Go on from the parser of the instrument's file before this one (the recorder writes a
        file an hour, without a snapshot at its start): what a line's rows take from the lines
        before it beyond the line itself. Nothing here; Bybit's `u` chain, Kraken's book."""

    def one_instrument(self, instrument_id: str) -> None:
        """ValueError when a message names another instrument than the file's first one."""
        if self.instrument_id is None:
            self.instrument_id = instrument_id
        elif instrument_id != self.instrument_id:
            raise ValueError(f"message of {instrument_id} in a capture of {self.instrument_id}: one instrument a file")

    def line(self, rows: TableRows, at: LineStamp, body: str) -> None:
        """Add the rows of one line; ValueError (the reason) for a line that cannot be read."""
        raise NotImplementedError

    def instrument(self) -> tuple[str, str, str]:
        """(the exchange's market, the lake's exchange, the lake's symbol) of the lines read."""
        raise NotImplementedError

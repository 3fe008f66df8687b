"""Streaming parse of raw Binance captures: lines in chunks -> lake table frames.

Memory is set by the chunks in flight (`DECODE_AHEAD` of `CHUNK_LINES / DECODE_THREADS` lines),
never by the size of a file: each chunk of lines becomes the five lake tables of `capture_format`
(line order kept, `line_no` running across the files), and the caller writes or concatenates them.
Chunks in Binance's usual shape are decoded in bulk (`capture_bulk`), two side by side on threads
ahead of the caller; the others line by line.
Parsing the bench day's capture (14 M lines) to scratch parts took 33.8 s wall on 2 cores this
way, 38.1 s with one chunk decoded at a time (28.1 s with `line_chunks` reading into arrays and
the JSON null found by `re`; see `capture_diffs` for the diffs read in one pass).

Line path: msgspec, one typed Struct per line with every price and size kept as its decimal string,
then one vectorised string -> float64 cast per chunk (polars; its parse is correctly rounded, as
Python's `float` is). Measured on the shared USD-M capture (94 k lines, 28 MB of text): decoding
the lines took 0.09 s with msgspec, 0.13 s with orjson, 0.29 s with the stdlib's json and 0.8 s
with polars' `str.json_decode` (per kind of message); orjson and the stdlib also build a Python
object per level. A line msgspec refuses, or one lacking a field, is read again with the stdlib's
`json` and `capture_format._classify` so that the error names the same reason as `iter_messages`.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import Annotated

import msgspec
import numpy as np
import polars as pl
from msgspec import UNSET, UnsetType

from market_pipeline.core.lake.schemas import BOOK_LEVELS, BOOK_SCHEMA, TRADES_SCHEMA
from market_pipeline.core.read_ahead import read_ahead
from market_pipeline.vendors.binance.capture_bulk import DecodedLines, decode_lines, level_rows, level_sides
from market_pipeline.vendors.binance.capture_format import (
    CHANNEL_KINDS,
    DELTA_SCHEMA,
    NS_PER_MS,
    SNAPSHOT_LEVELS_SCHEMA,
    TICKER_SCHEMA,
    _classify,
    binance_market_of,
    diff_market,
    lake_instrument,
)
from market_pipeline.vendors.capture_files import CHUNK_LINES, CaptureFormatError, LineChunk, line_chunks, open_capture

LINE_ORDERED = ("book_delta_v2", "depth_snapshot", "book_ticker")
TABLE_SCHEMAS: dict[str, dict[str, pl.DataType]] = {
    "trades": TRADES_SCHEMA,
    "book_delta_v2": DELTA_SCHEMA,
    "depth_snapshot": SNAPSHOT_LEVELS_SCHEMA,
    "book": BOOK_SCHEMA,
    "book_ticker": TICKER_SCHEMA,
}

Levels = list[tuple[str, str]]
# Threads decoding chunks in bulk ahead of the caller: numba, Arrow and polars release the GIL, so
# two chunks decode side by side on two cores. Up to DECODE_AHEAD chunks are decoded or decoding
# ahead of the caller, so that its writes (a row group at a time, about 0.1 s) do not stall the
# decoders: the bench day's parse to parts took 18.8-19.2 s wall and 552 MB so, 19.8-20.4 s and
# 512-523 MB with two ahead, 22.4-24.0 s with four chunks of half the lines ahead.
DECODE_THREADS = 2
DECODE_AHEAD = 4
# The lake stores every integer as int64: a larger one is a bad line, not an overflow later.
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
Int64 = Annotated[int, msgspec.Meta(ge=_INT64_MIN, le=_INT64_MAX)]


class _Data(msgspec.Struct):
    """The `data` of a combined-stream message: the fields of every kind, each optional."""

    E: Int64 | UnsetType = UNSET  # event time, ms
    T: Int64 | UnsetType = UNSET  # transaction / trade time, ms
    s: str | None | UnsetType = UNSET
    U: Int64 | UnsetType = UNSET
    u: Int64 | UnsetType = UNSET
    pu: Int64 | None | UnsetType = UNSET
    b: Levels | str | UnsetType = UNSET  # diff: levels; bookTicker: best bid price
    a: Levels | str | UnsetType = UNSET
    B: str | UnsetType = UNSET
    A: str | UnsetType = UNSET
    p: str | UnsetType = UNSET
    q: str | UnsetType = UNSET
    t: Int64 | str | UnsetType = UNSET
    m: bool | UnsetType = UNSET


class _Line(msgspec.Struct):
    """One line's JSON: a combined-stream message or a REST depth snapshot."""

    stream: str | UnsetType = UNSET
    data: _Data | UnsetType = UNSET
    s: str | None | UnsetType = UNSET
    lastUpdateId: Int64 | UnsetType = UNSET  # noqa: N815 - Binance's name
    E: Int64 | UnsetType = UNSET
    T: Int64 | UnsetType = UNSET
    bids: Levels | UnsetType = UNSET
    asks: Levels | UnsetType = UNSET


_DECODER = msgspec.json.Decoder(_Line)


def _stdlib_reason(body: bytes, refused: object) -> str:
    """Why a line was refused, in the words of the stdlib path (`iter_messages`)."""
    try:
        kind, _ = _classify(json.loads(body.decode("utf-8")))
    except UnicodeDecodeError as exc:
        return f"unreadable: {exc}"
    except ValueError as exc:  # bad JSON, not an object, unsupported stream, missing fields
        return str(exc)
    return f"bad {kind} message: {refused}"


def _floats(strings: Sequence[str] | pl.Series) -> tuple[np.ndarray, int | None]:
    """Decimal strings as float64, and the index of the first one that is not a number (else None).

    polars parses the usual spellings; the few it refuses go through Python's `float`, which also
    reads spaces, underscores and the like."""
    values = (strings if isinstance(strings, pl.Series) else pl.Series(strings, dtype=pl.String)).cast(
        pl.Float64, strict=False
    )
    refused = np.flatnonzero(values.is_null().to_numpy())
    out = values.to_numpy()
    for index in refused.tolist():
        try:
            out[index] = float(strings[index])
        except ValueError:
            return out, int(index)
    return out, None


class _Chunk:
    """The messages of one chunk, column by column, before the numbers are cast."""

    def __init__(self) -> None:
        self.diff_head: list[tuple] = []  # (line_no, recv, E, U, u, pu, bids, asks)
        self.diff_levels: Levels = []
        self.snapshots: list[tuple] = []  # (line_no, recv, lastUpdateId, origin ms, bids, asks)
        self.snap_levels: Levels = []
        self.tickers: list[tuple] = []  # _TICKER_FIELDS
        self.trades: list[tuple] = []  # _TRADE_FIELDS


class CaptureParser:
    """The capture files of ONE instrument, given in time order, parsed chunk by chunk.

    `chunks()` yields each chunk's tables (`TABLE_SCHEMAS`); `instrument()` then tells the
    market, exchange and symbol. Errors are `CaptureFormatError`s naming the file and line of the
    first malformed line, or the file when the files mix instruments or markets.
    """

    def __init__(self, paths: Sequence[Path], chunk_lines: int | None = None) -> None:
        self.paths = [Path(p) for p in paths]
        if not self.paths:
            raise ValueError("parsing a capture needs at least one capture file")
        named = {binance_market_of(p) for p in self.paths} - {None}
        if len(named) > 1:
            raise CaptureFormatError(self.paths[0], None, f"files name different markets {sorted(named)}")
        self.market: str | None = named.pop() if named else None
        self.binance_symbol: str | None = None
        self.chunk_lines = chunk_lines or CHUNK_LINES // DECODE_THREADS  # DECODE_AHEAD of them in flight
        self.lines = 0  # lines read so far: the next line's line_no

    def chunks(self) -> Iterator[dict[str, pl.DataFrame]]:
        # Chunks are decoded in bulk on `DECODE_THREADS` threads, ahead of the caller, and taken in
        # order; the parser's state (symbol, market, line count) changes only here, in order.
        with ThreadPoolExecutor(DECODE_THREADS, thread_name_prefix="capture-decode") as pool:
            for path in self.paths:
                first_line_no, submitted = self.lines, self.lines
                decoding: deque[tuple[LineChunk, Future[_Bulk | None]]] = deque()
                with open_capture(path) as stream:
                    for lines, broken in read_ahead(line_chunks(stream, self.chunk_lines), "capture-read"):
                        if len(lines):
                            decoding.append((lines, pool.submit(_bulk, lines, submitted)))
                            submitted += len(lines)
                        while decoding and (len(decoding) > DECODE_AHEAD or broken is not None):
                            yield self._parse(path, first_line_no, *decoding.popleft())
                        if broken is not None:  # truncated or corrupt file
                            where = self.lines - first_line_no + 1
                            raise CaptureFormatError(path, where, f"unreadable: {broken}") from broken
                    while decoding:
                        yield self._parse(path, first_line_no, *decoding.popleft())

    def instrument(self) -> tuple[str, str, str]:
        """(market, Crypto Lake exchange, Crypto Lake symbol) of the lines read."""
        if self.binance_symbol is None:
            raise CaptureFormatError(self.paths[0], None, "no message names the symbol (field 's')")
        if self.market is None:
            raise CaptureFormatError(
                self.paths[0], None, "market unknown: no binance_{spot,usdm,coinm}_ file name and no diffs"
            )
        try:
            return (self.market, *lake_instrument(self.market, self.binance_symbol))
        except ValueError as exc:
            raise CaptureFormatError(self.paths[0], None, str(exc)) from None

    def _parse(
        self, path: Path, first_line_no: int, lines: LineChunk, decoding: Future[_Bulk | None]
    ) -> dict[str, pl.DataFrame]:
        bulk, refused = decoding.result(), None
        if bulk is not None and self._follows(bulk):
            tables = bulk.tables
        else:  # not in the bulk path's shape, or naming another symbol or market: read line by line
            chunk = _Chunk()
            numbered = enumerate(lines.lines(), start=self.lines)
            refused, self.binance_symbol, self.market = _collect(chunk, numbered, self.binance_symbol, self.market)
            tables = _tables(chunk)
        self.lines += len(lines)
        tables, bad_number = tables
        # A bad number is found after the whole chunk is read: the earlier of the two errors wins.
        if bad_number is not None and (refused is None or bad_number[0] < refused[0]):
            refused = bad_number
        if refused is not None:
            raise CaptureFormatError(path, refused[0] - first_line_no + 1, refused[1])
        return tables

    def _follows(self, bulk: _Bulk) -> bool:
        """Whether a chunk decoded in bulk names the symbol and market of the lines before it (or
        they named none); if so, they become the parser's."""
        if None not in (self.binance_symbol, bulk.symbol) and bulk.symbol != self.binance_symbol:
            return False
        if None not in (self.market, bulk.market) and bulk.market != self.market:
            return False
        self.binance_symbol, self.market = self.binance_symbol or bulk.symbol, self.market or bulk.market
        return True


@dataclass(frozen=True)
class _Bulk:
    """A chunk decoded in bulk: its tables and first bad number (`_tables`), and the one symbol
    and market its lines name (None when they name none)."""

    tables: tuple[dict[str, pl.DataFrame], tuple[int, str] | None]
    symbol: str | None
    market: str | None


def _bulk(lines: LineChunk, first_line_no: int) -> _Bulk | None:
    """The chunk (line_no from `first_line_no`) decoded in bulk (`capture_bulk`), its few other
    lines (REST snapshots) read line by line; None when the chunk is not in that shape, holds
    anything the line path would refuse or names two symbols or markets. It reads no parser
    state, so chunks are decoded side by side; the parser then checks that the chunk follows the
    lines before it (`CaptureParser._follows`)."""
    decoded = decode_lines(lines, first_line_no)
    if decoded is None or len(decoded.symbols) > 1:
        return None
    symbol, market = next(iter(decoded.symbols), None), None
    for has_pu, named in decoded.diff_shapes:
        shape = diff_market(has_pu, named)
        if (market or shape) != shape:
            return None
        market = shape
    chunk = _Chunk()
    others = zip((first_line_no + i for i in decoded.others), lines.lines(decoded.others), strict=True)
    refused, symbol, market = _collect(chunk, others, symbol, market)
    if refused is not None or chunk.diff_head or chunk.tickers or chunk.trades:
        return None
    return _Bulk(_tables(chunk, decoded), symbol, market)


def _collect(
    chunk: _Chunk, numbered: Iterable[tuple[int, bytes]], symbol: str | None, market: str | None
) -> tuple[tuple[int, str] | None, str | None, str | None]:
    """Sort the lines (line_no, line) into `chunk` up to the first bad one, given the symbol and
    market of the lines before (None if unknown); ((its line_no, reason) or None, the symbol and
    market after them)."""
    stream_kinds: dict[str, str | None] = {}  # a chunk's lines name a few streams: each is parsed once
    refused = None
    for line_no, line in numbered:
        stamp, _, body = line.partition(b" ")
        try:
            recv = int(stamp)
        except ValueError:
            text = stamp.decode("utf-8", "replace")
            refused = (line_no, f"receive time {text[:40]!r} is not an integer")
            break
        if not _INT64_MIN <= recv <= _INT64_MAX:
            refused = (line_no, f"receive time {recv} is out of the int64 range")
            break
        try:
            msg = _DECODER.decode(body)
        except msgspec.MsgspecError as exc:
            refused = (line_no, _stdlib_reason(body, exc))
            break
        if msg.stream is not UNSET:
            data = msg.data
            kind = stream_kinds.get(msg.stream, UNSET)
            if kind is UNSET:  # a stream not seen before in this chunk
                kind = stream_kinds[msg.stream] = CHANNEL_KINDS.get(msg.stream.partition("@")[2].partition("@")[0])
            if kind is None or data is UNSET or _lacks(kind, data):
                refused = (line_no, _stdlib_reason(body, "a field has the wrong type"))
                break
            named = data.s
        elif msg.lastUpdateId is not UNSET and msg.bids is not UNSET and msg.asks is not UNSET:
            kind, data, named = "snapshot", msg, msg.s
        else:
            refused = (line_no, _stdlib_reason(body, None))
            break
        if named is not UNSET and named is not None:
            if symbol is None:
                symbol = named
            elif named != symbol:
                refused = (line_no, f"bad {kind} message: symbol {named!r} differs from {symbol!r} before it")
                break
        if kind == "ticker":
            event, trade_time = (None if t is UNSET else t for t in (data.E, data.T))
            chunk.tickers.append((event, trade_time, data.u, data.b, data.B, data.a, data.A, recv, line_no))
        elif kind == "trade":
            chunk.trades.append((data.T, data.m, data.p, data.q, str(data.t), recv, line_no))
        elif kind == "diff":
            shape = diff_market(data.pu is not UNSET, named)
            if market is None:
                market = shape
            elif shape != market:
                refused = (line_no, f"bad diff message: a {shape} depth diff in a {market} capture")
                break
            pu = None if data.pu is UNSET else data.pu
            chunk.diff_head.append((line_no, recv, data.E, data.U, data.u, pu, len(data.b), len(data.a)))
            chunk.diff_levels += data.b
            chunk.diff_levels += data.a
        else:
            origin = data.E if data.E is not UNSET else (None if data.T is UNSET else data.T)
            chunk.snapshots.append((line_no, recv, data.lastUpdateId, origin, len(data.bids), len(data.asks)))
            chunk.snap_levels += data.bids
            chunk.snap_levels += data.asks
    return refused, symbol, market


def _lacks(kind: str, data: _Data) -> bool:
    """Whether a message lacks a field its kind needs (`capture_format._REQUIRED`) or has the other
    kind's shape of b / a (a list of levels in a diff, a price string in a bookTicker)."""
    if kind == "diff":
        return type(data.b) is not list or type(data.a) is not list or UNSET in (data.E, data.U, data.u)
    if kind == "ticker":
        return type(data.b) is not str or type(data.a) is not str or UNSET in (data.u, data.B, data.A)
    return UNSET in (data.t, data.p, data.q, data.T, data.m)


def _level_columns(
    levels: Levels | pl.Series, kind: str, line_of_row: np.ndarray
) -> tuple[np.ndarray, np.ndarray, tuple | None]:
    """(prices, sizes, (line_no, reason) of the first bad number or None) of level rows: (price,
    size) pairs, or their strings one after another."""
    strings = levels if isinstance(levels, pl.Series) else list(chain.from_iterable(levels))  # price, size, ...
    values, index = _floats(strings)
    pairs = values.reshape(-1, 2)
    bad = None
    if index is not None:
        reason = f"bad {kind} message: could not convert string to float: {strings[index]!r}"
        bad = (int(line_of_row[index // 2]), reason)
    return pairs[:, 0], pairs[:, 1], bad


_I, _S = pl.Int64(), pl.String()
_DIFF_HEAD = {"line_no": _I, "received_time": _I, "E": _I, "U": _I, "u": _I, "pu": _I, "bids": _I, "asks": _I}
_SNAPSHOT_HEAD = {
    "line_no": _I,
    "received_time": _I,
    "last_update_id": _I,
    "origin": pl.Object(),
    "bids": _I,
    "asks": _I,
}
# bookTickers and trades as decoded (E / T null when absent, numbers strings, or float64 when read in
# one pass), and the types of their tables' other columns, with the line_no (for errors).
_TICKER_FIELDS = {**dict.fromkeys(("E", "T", "u"), _I), **dict.fromkeys("bBaA", _S), "received_time": _I, "line_no": _I}
_TRADE_FIELDS = {"T": _I, "m": pl.Boolean(), **dict.fromkeys("pqt", _S), "received_time": _I, "line_no": _I}
_TICKER_ROWS = {name: dtype for name, dtype in TICKER_SCHEMA.items() if dtype != pl.Float64}
_TRADE_ROWS = {**{name: dtype for name, dtype in TRADES_SCHEMA.items() if dtype != pl.Float64}, "line_no": _I}
_NO_BOOK = pl.DataFrame(schema=BOOK_SCHEMA)  # the book table of a chunk without a REST snapshot


def _ticker_rows(fields: pl.DataFrame) -> pl.DataFrame:
    """bookTicker rows: the event time (else the transaction time, else the receive time) as origin."""
    return fields.select(
        origin_time=pl.coalesce(pl.col("E") * NS_PER_MS, pl.col("T") * NS_PER_MS, "received_time"),
        received_time="received_time",
        update_id="u",
        bid_price="b",
        bid_size="B",
        ask_price="a",
        ask_size="A",
        line_no="line_no",
    ).cast(_TICKER_ROWS)  # type: ignore[arg-type]


def _trade_rows(fields: pl.DataFrame) -> pl.DataFrame:
    """Trade rows (m: the buyer is the maker, so the taker sold)."""
    return fields.select(
        origin_time=pl.col("T") * NS_PER_MS,
        received_time="received_time",
        side=pl.when("m").then(pl.lit("sell")).otherwise(pl.lit("buy")),
        price="p",
        quantity="q",
        trade_id="t",
        line_no="line_no",
    ).cast(_TRADE_ROWS)  # type: ignore[arg-type]


def _cast_numbers(frame: pl.DataFrame, kind: str, bad: list[tuple[int, str]]) -> pl.DataFrame:
    """`frame` with its string columns that the lake stores as float64 cast; a value that is not a
    number adds (line_no, reason) to `bad`."""
    schema = TICKER_SCHEMA if kind == "ticker" else TRADES_SCHEMA
    cast = {}
    for name, dtype in frame.schema.items():
        if schema.get(name) == pl.Float64 and dtype == pl.String:
            cast[name], index = _floats(frame.get_column(name))
            if index is not None:
                value = frame.get_column(name)[index]
                bad.append(
                    (
                        frame.get_column("line_no")[index],
                        f"bad {kind} message: could not convert string to float: {value!r}",
                    )
                )
    return frame.with_columns(**{name: pl.Series(values) for name, values in cast.items()})


def _tables(
    chunk: _Chunk, decoded: DecodedLines | None = None
) -> tuple[dict[str, pl.DataFrame], tuple[int, str] | None]:
    """The chunk as lake tables, and (line_no, reason) of its first bad number, if any: its
    streams' messages from `decoded` when decoded in bulk, else from `chunk`."""
    bad: list[tuple[int, str]] = []
    if decoded is None:
        rows = level_rows(pl.DataFrame(chunk.diff_head, schema=_DIFF_HEAD, orient="row"))
        diff_levels: Levels | pl.Series | None = chunk.diff_levels
        tickers = pl.DataFrame(chunk.tickers, schema=_TICKER_FIELDS, orient="row")
        trades = pl.DataFrame(chunk.trades, schema=_TRADE_FIELDS, orient="row")
    else:
        rows, diff_levels = decoded.diff_rows, decoded.diff_levels
        tickers, trades = decoded.tickers, decoded.trades
    if diff_levels is not None:  # their strings: cast here, for the line of a bad one
        price, size, bad_level = _level_columns(diff_levels, "diff", rows.get_column("line_no").to_numpy())
        bad += [bad_level] if bad_level else []
        rows = rows.with_columns(price=pl.Series(price), size=pl.Series(size))
    deltas = rows.select(
        origin_time=pl.col("E") * NS_PER_MS,
        received_time="received_time",
        sequence_number="u",
        side_is_bid="side_is_bid",
        price="price",
        size="size",
        first_update_id="U",
        prev_update_id="pu",
        line_no="line_no",
    )

    snaps = pl.DataFrame(chunk.snapshots, schema=_SNAPSHOT_HEAD, orient="row")
    s_bids, s_asks = snaps.get_column("bids").to_numpy(), snaps.get_column("asks").to_numpy()
    s_rows = snaps.drop("origin").gather(np.repeat(np.arange(snaps.height), s_bids + s_asks))
    s_price, s_size, bad_level = _level_columns(chunk.snap_levels, "snapshot", s_rows.get_column("line_no").to_numpy())
    bad += [bad_level] if bad_level else []
    levels = s_rows.select(
        "received_time",
        "last_update_id",
        side_is_bid=pl.Series(level_sides(s_bids, s_asks)),
        price=pl.Series(s_price),
        size=pl.Series(s_size),
        line_no="line_no",
    )
    book = _book(chunk.snapshots, s_price, s_size)

    tables = {
        "trades": _cast_numbers(_trade_rows(trades), "trade", bad).drop("line_no"),
        "book_delta_v2": deltas.cast(DELTA_SCHEMA),  # type: ignore[arg-type]
        "depth_snapshot": levels.cast(SNAPSHOT_LEVELS_SCHEMA),  # type: ignore[arg-type]
        "book": book,
        "book_ticker": _cast_numbers(_ticker_rows(tickers), "ticker", bad),
    }
    return tables, min(bad, default=None)


def _book(snapshots: list[tuple], prices: np.ndarray, sizes: np.ndarray) -> pl.DataFrame:
    """The `book` table: the top `BOOK_LEVELS` of each REST snapshot (which lists each side best first)."""
    if not snapshots:  # most chunks: building the 80-odd empty columns took 5 ms a chunk
        return _NO_BOOK
    columns: dict[str, list] = {name: [] for name in BOOK_SCHEMA}
    start = 0
    for _, recv, lid, origin, n_bids, n_asks in snapshots:
        # Futures REST snapshots carry the exchange's E / T; spot ones neither: the receive time stands in.
        columns["origin_time"].append(recv if origin is None else origin * NS_PER_MS)
        columns["received_time"].append(recv)
        columns["sequence_number"].append(lid)
        for side, first, count in (("bid", start, n_bids), ("ask", start + n_bids, n_asks)):
            for i in range(BOOK_LEVELS):
                inside = i < count
                columns[f"{side}_{i}_price"].append(float(prices[first + i]) if inside else None)
                columns[f"{side}_{i}_size"].append(float(sizes[first + i]) if inside else None)
        start += n_bids + n_asks
    return pl.DataFrame(columns, schema=BOOK_SCHEMA)

"""A chunk of capture lines decoded in bulk, with no Python statement per line: each line's receive
time and kind read by one pass over the text (`capture_scan`), the depth diffs read by another
(`capture_diffs`) and the bookTickers and trades by a third (`capture_flat`) when every one of a
kind is in Binance's exact shape, and the messages of a kind they decline parsed by one call of
Arrow's JSON reader with that kind's explicit schema, their levels and fields turned into columns
by Arrow and polars.

This is the fast path of `capture_stream.CaptureParser`, for chunks in the shape Binance sends:
ASCII text, no JSON `null`, every line `<receive ns> {"stream":"<symbol>@<channel>...","data":{..}}`
or (a few a day) a REST snapshot, which the parser reads line by line. Whatever else a chunk holds
(a line the reader refuses, a missing field, a level that is not a pair of strings, another
symbol or market, two objects on a line, an empty line) makes `decode_lines` return None, and the
parser reads the whole chunk line by line instead: the same tables, and the error naming the same
line and reason. The reader is strict where the line path is: a number where a string belongs, a
fraction or a string where an integer belongs, a duplicated key, trailing text are all refused.

Measured on the bench day's first 1 M lines (869,940 diffs, 173 MB of text), CPU seconds: Arrow's
reader parsed the diffs into columns in 1.4 to 1.7 (2.5-3.1 on a slower machine, where the one
pass of `capture_diffs` took 0.6); msgspec decoded them in 1.2 a line at a time but the Python
that sorts each message's fields into rows took 3 more.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pa_json

from market_pipeline.core.reused_arrays import PerThreadArrays
from market_pipeline.vendors.binance.capture_diffs import LEVEL_INTEGERS, DiffLevels, decode_diffs
from market_pipeline.vendors.binance.capture_flat import TICKER, TRADE, FlatKind, FlatMessages, decode_flat
from market_pipeline.vendors.binance.capture_format import CHANNEL_KINDS
from market_pipeline.vendors.binance.capture_scan import KINDS, OTHER, join_messages, scan_lines
from market_pipeline.vendors.capture_files import LineChunk

# Lines a chunk needs for the bulk path: each chunk costs it about 8 ms more than the line path
# (the calls into Arrow and polars), each line about 2 us less (measured on the shared captures in
# chunks of 97 lines: 8.1 s against 4.4 s for the line path).
BULK_MIN_LINES = 5_000
# A JSON block Arrow parses at a time; larger than any combined-stream message. A chunk's blocks
# are parsed one after another: chunks are decoded two at a time already
# (`capture_stream.DECODE_THREADS`), and Arrow's own threads only contended with them. Parsing the
# bench day's capture took 24.2-24.6 s wall (43.0-43.3 CPU-s, 540-563 MB peak) with them and
# 22.0-22.8 s (40.9-42.5 CPU-s, 455-478 MB) without, alternating.
_JSON_BLOCK_BYTES = 4 << 20
_LEVELS = pa.list_(pa.list_(pa.string()))
_I64, _TEXT = pa.int64(), pa.string()
# The `data` fields each kind's rows take (others are ignored, as the line path ignores them).
_DATA_FIELDS = {
    "diff": {"E": _I64, "s": _TEXT, "U": _I64, "u": _I64, "pu": _I64, "b": _LEVELS, "a": _LEVELS},
    "ticker": {"E": _I64, "T": _I64, "s": _TEXT, "u": _I64, "b": _TEXT, "B": _TEXT, "a": _TEXT, "A": _TEXT},
    # A trade's E is not kept, but the line path refuses one that is not an integer.
    "trade": {"E": _I64, "T": _I64, "s": _TEXT, "t": _I64, "p": _TEXT, "q": _TEXT, "m": pa.bool_()},
}
# Fields a kind's message must carry (`capture_format._REQUIRED`; a diff's `pu` is futures' only).
_REQUIRED = {
    "diff": ("E", "U", "u", "b", "a"),
    "ticker": ("u", "b", "B", "a", "A"),
    "trade": ("t", "p", "q", "T", "m"),
}
_FLAT = {"ticker": TICKER, "trade": TRADE}  # the kinds `capture_flat` reads
_NULL = re.compile(b"null")  # a JSON null in what Arrow parses: the line path reads the chunk


@dataclass(frozen=True)
class DecodedLines:
    """A chunk's combined-stream messages as columns (numbers the exchange's strings, or float64
    where a one-pass reader read them), and which lines are left for the line path (REST snapshots)."""

    diff_rows: pl.DataFrame  # a row a level (`level_rows`), and its price and size when read in one pass
    diff_levels: pl.Series | None  # else their strings: price, size, price, size, ... row by row
    tickers: pl.DataFrame  # E, T, u, b, B, a, A, received_time, line_no of the bookTickers
    trades: pl.DataFrame  # T, m, p, q, t (as text), received_time, line_no of the trades
    symbols: frozenset[str]  # the `s` the messages name
    diff_shapes: frozenset[tuple[bool, str | None]]  # (whether it carries `pu`, its `s`) of the diffs
    others: list[int]  # the index in the chunk of every other line


# The level rows of the diffs each thread decodes, and their scratch, in memory of earlier chunks
# that nothing refers to any more (`ReusedArrays`): enough for the chunks in flight, whose tables
# keep their rows until written (`capture_stream`'s decode threads, which end with the parse).
_DIFF_ARRAYS = PerThreadArrays(24)


def decode_lines(chunk: LineChunk, first_line_no: int) -> DecodedLines | None:
    """The chunk's lines (line_no from `first_line_no`) decoded in bulk; None when the chunk is
    not in the shape this path reads or too short to pay (the caller reads it line by line)."""
    if len(chunk) < BULK_MIN_LINES or chunk.text.max(initial=0) >= 0x80:  # not ASCII
        return None
    scanned = scan_lines(chunk.text, chunk.ends)
    if scanned is None:
        return None
    received, kinds, bodies = scanned
    line_nos = np.arange(first_line_no, first_line_no + len(chunk), dtype=np.int64)
    rows = {kind: np.flatnonzero(kinds == code) for code, kind in enumerate(KINDS)}
    diff_received, diff_line_nos = received[rows["diff"]], line_nos[rows["diff"]]
    diffs = decode_diffs(
        chunk.text, chunk.ends, bodies, rows["diff"], diff_received, diff_line_nos, _DIFF_ARRAYS.mine()
    )
    if diffs is not None and 0 < diffs.has_pu.sum() < len(diffs.has_pu):
        return None  # spot and futures diffs: the line path names the first that differs
    flat = {kind: decode_flat(chunk.text, chunk.ends, bodies, rows[kind], _FLAT[kind]) for kind in _FLAT}
    read = {"diff": diffs is not None} | {kind: messages is not None for kind, messages in flat.items()}
    # Arrow parses the messages of every kind the one-pass readers declined.
    parsed = kinds.copy()
    for kind, was_read in read.items():
        if was_read:
            parsed[rows[kind]] = OTHER
    messages = join_messages(chunk.text, chunk.ends, bodies, parsed) if (parsed != OTHER).any() else None
    columns = {}
    for code, kind in enumerate(KINDS):
        if read[kind]:
            continue
        data = _parse(messages[code], len(rows[kind]), kind)
        if data is None:
            return None
        columns[kind] = (data, received[rows[kind]], line_nos[rows[kind]])
    symbols: set[str] = set()
    for data, _, _ in columns.values():
        symbols.update(s for s in pc.unique(data.field("s")).to_pylist() if s is not None)
    if diffs is None:
        arrow_diffs = _diffs(*columns["diff"])
        if arrow_diffs is None:
            return None
        (diff_rows, levels), shapes = arrow_diffs, _diff_shapes(columns["diff"][0])
    else:
        named = {diffs.symbol.decode()} if len(rows["diff"]) else set()
        symbols |= named
        shapes = frozenset((bool(has_pu), s) for has_pu in np.unique(diffs.has_pu) for s in named)
        diff_rows, levels = _decoded_diffs(diffs), None
    symbols.update(messages.symbol.decode() for messages in flat.values() if messages is not None and messages.symbol)
    if read["ticker"]:
        tickers = _flat_tickers(flat["ticker"], received[rows["ticker"]], line_nos[rows["ticker"]])
    else:
        tickers = _tickers(*columns["ticker"])
    if read["trade"]:
        trades = _flat_trades(flat["trade"], received[rows["trade"]], line_nos[rows["trade"]])
    else:
        trades = _trades(*columns["trade"])
    return DecodedLines(
        diff_rows=diff_rows,
        diff_levels=levels,
        tickers=tickers,
        trades=trades,
        symbols=frozenset(symbols),
        diff_shapes=shapes,
        others=np.flatnonzero(kinds == OTHER).tolist(),
    )


def _diff_shapes(data: pa.StructArray) -> frozenset[tuple[bool, str | None]]:
    """The (carries `pu`, `s`) pairs of the diffs: each says its market (`diff_market`)."""
    pairs = pa.table({"pu": pc.is_valid(data.field("pu")), "s": data.field("s")}).group_by(["pu", "s"]).aggregate([])
    return frozenset(zip(pairs.column("pu").to_pylist(), pairs.column("s").to_pylist(), strict=True))


def _parse(text: np.ndarray, count: int, kind: str) -> pa.StructArray | None:
    """The `data` of one kind's `count` messages (`text`: a line each), every required field
    present; None when a message holds a JSON null, Arrow refuses a line, a line is not one object,
    or the stream names another kind."""
    data_type = pa.struct(_DATA_FIELDS[kind])
    if not count:
        return pa.array([], data_type)
    # Arrow reads a JSON null as a missing value, where the line path may refuse it. Only what Arrow
    # parses is searched: `capture_diffs` refuses a null itself (0.13 s a million lines for the
    # whole chunk, most of it diffs; Arrow's match_substring took 0.36).
    if _NULL.search(memoryview(text)):
        return None
    try:
        table = pa_json.read_json(
            pa.BufferReader(pa.py_buffer(text)),
            read_options=pa_json.ReadOptions(block_size=_JSON_BLOCK_BYTES, use_threads=False),
            parse_options=pa_json.ParseOptions(
                explicit_schema=pa.schema([("stream", _TEXT), ("data", data_type)]),
                unexpected_field_behavior="ignore",
            ),
        )
    except pa.ArrowInvalid:
        return None
    if table.num_rows != count:  # an empty line, or two objects on one
        return None
    streams = pc.unique(table.column("stream")).to_pylist()
    if any(s is None or CHANNEL_KINDS.get(s.partition("@")[2].partition("@")[0]) != kind for s in streams):
        return None
    data = table.column("data").combine_chunks()
    if data.null_count or any(data.field(name).null_count for name in _REQUIRED[kind]):
        return None
    return data


def _diffs(data: pa.StructArray, received: np.ndarray, line_nos: np.ndarray) -> tuple[pl.DataFrame, pl.Series] | None:
    """(level rows, level strings) of the diffs Arrow read, as the line path builds them; None
    when a level is not a [price, size] pair."""
    bids, asks = data.field("b"), data.field("a")
    n_bids, n_asks = pc.list_value_length(bids).to_numpy(), pc.list_value_length(asks).to_numpy()
    # Each diff's bids, then its asks: level rows ordered by (diff, side), stably.
    message = np.arange(len(data), dtype=np.int64)
    side_key = np.concatenate([np.repeat(2 * message, n_bids), np.repeat(2 * message + 1, n_asks)])
    levels = pa.concat_arrays([bids.flatten(), asks.flatten()]).take(np.argsort(side_key, kind="stable"))
    if len(levels) and pc.min_max(pc.list_value_length(levels)).as_py() != {"min": 2, "max": 2}:
        return None
    head = _fields(data, ("E", "U", "u", "pu"), received, line_nos).with_columns(
        bids=pl.Series(n_bids, dtype=pl.Int64), asks=pl.Series(n_asks, dtype=pl.Int64)
    )
    return level_rows(head), pl.Series(levels.flatten())


def level_rows(head: pl.DataFrame) -> pl.DataFrame:
    """Each diff's fields (a row a diff, `bids` and `asks` its numbers of levels) on each of its
    level rows, its bids then its asks, with `side_is_bid`."""
    n_bids, n_asks = head.get_column("bids").to_numpy(), head.get_column("asks").to_numpy()
    rows = head.gather(np.repeat(np.arange(head.height), n_bids + n_asks))
    return rows.with_columns(side_is_bid=pl.Series(level_sides(n_bids, n_asks)))


def level_sides(n_bids: np.ndarray, n_asks: np.ndarray) -> np.ndarray:
    """side_is_bid of messages' level rows: each message's bids, then its asks."""
    counts = np.stack([n_bids, n_asks], axis=1).ravel()
    return np.repeat(np.tile(np.array([True, False]), len(n_bids)), counts)


def _decoded_diffs(levels: DiffLevels) -> pl.DataFrame:
    """The level rows `capture_diffs` read, as `level_rows` gives them, with their price and size."""
    frame = pl.DataFrame(
        {
            **dict(zip(LEVEL_INTEGERS, levels.integers, strict=True)),
            "side_is_bid": levels.side_is_bid,
            "price": levels.prices,
            "size": levels.sizes,
        }
    )
    return frame if levels.has_pu.all() else frame.with_columns(pu=pl.lit(None, dtype=pl.Int64))


def _tickers(data: pa.StructArray, received: np.ndarray, line_nos: np.ndarray) -> pl.DataFrame:
    """bookTicker messages as the line path collects them (`capture_stream._TICKER_FIELDS`)."""
    return _fields(data, ("E", "T", "u", "b", "B", "a", "A"), received, line_nos)


def _trades(data: pa.StructArray, received: np.ndarray, line_nos: np.ndarray) -> pl.DataFrame:
    """Trade messages as the line path collects them (`capture_stream._TRADE_FIELDS`)."""
    return _fields(data, ("T", "m", "p", "q", "t"), received, line_nos).with_columns(pl.col("t").cast(pl.String))


def _flat_tickers(read: FlatMessages, received: np.ndarray, line_nos: np.ndarray) -> pl.DataFrame:
    """bookTickers `capture_flat` read, as `_tickers` gives them (the prices and sizes float64)."""
    return _flat_frame(read, TICKER, received, line_nos).with_columns(
        E=pl.when(pl.Series(read.has(TICKER, "E"))).then("E"), T=pl.when(pl.Series(read.has(TICKER, "T"))).then("T")
    )


def _flat_trades(read: FlatMessages, received: np.ndarray, line_nos: np.ndarray) -> pl.DataFrame:
    """Trades `capture_flat` read, as `_trades` gives them (the prices and quantities float64)."""
    return _flat_frame(read, TRADE, received, line_nos).select(
        "T", pl.col("m").cast(pl.Boolean), "p", "q", pl.col("t").cast(pl.String), "received_time", "line_no"
    )


def _flat_frame(read: FlatMessages, kind: FlatKind, received: np.ndarray, line_nos: np.ndarray) -> pl.DataFrame:
    """The kind's fields `capture_flat` read, their receive times and line_nos, as one frame."""
    return pl.DataFrame(
        {
            **dict(zip(kind.integers, read.integers, strict=True)),
            **dict(zip(kind.decimals, read.decimals, strict=True)),
            "received_time": received,
            "line_no": line_nos,
        }
    )


def _fields(data: pa.StructArray, names: tuple[str, ...], received: np.ndarray, line_nos: np.ndarray) -> pl.DataFrame:
    """The messages' `data` fields `names`, their receive times and line_nos, as one frame."""
    fields = {name: pl.from_arrow(data.field(name)) for name in names}
    return pl.DataFrame({**fields, "received_time": received, "line_no": line_nos})

"""A Tardis.dev CSV file (``.csv.gz`` or ``.csv``) read as a stream of typed batches.

The file is decompressed and parsed a block at a time (`pyarrow.csv.open_csv` over the file
inflated by ISA-L, `BLOCK_BYTES` a block) and handed on `BATCH_BLOCKS` blocks a batch, so memory is
set by the block and batch sizes, never by the file: no decompressed copy is made and no whole
frame is held. Measured in CPU seconds, best of 3, on the first 8 M rows of the bench's
incremental_book_L2 file (108 MB .csv.gz, 583 MB of CSV): inflating alone 0.97 s with zlib (Arrow's
gzip input stream, used before) and 0.38 s with ISA-L (python-isal's igzip, which releases the GIL
as Arrow does); parsing the text 1.3 to 1.5 s (1 to 4 MB blocks, Arrow's threads or not). Earlier,
on 8.5 M rows: decompressing and parsing into polars frames 2.9 s with 1 MB blocks (160 MB peak for
the process) and 3.3 s with 16 MB blocks (450 MB; Arrow's parser holds tens of times a block).
Polars' `scan_csv` of the .gz file takes 1.9 s (275 MB) but names no line for a row that fails,
does not tell a decompression failure apart, and does not show the file's last byte (a second pass
would cost more than it saves). Polars' `read_csv` of each batch's whole lines (inflated here)
parsed the bench day's L2 file in 5.6-6.1 s against Arrow's 7.2-8.1, but the L2 file's way to its
cache table, where the checks and the writer share the two cores, took as long (10.9-13.5 s
against 12.4-12.9, alternating); and it reads a short row's missing fields, and a blank line, as
nulls.

Everything wrong with the file raises `TardisFormatError` naming the file and, where it can, the
line (line 1 is the header): a bad header, a truncated or corrupt gzip, a last line without its
newline (found at the end of the stream), a short or long row, an unparsable value.
"""

from __future__ import annotations

import csv
import io
import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.csv as pa_csv
from isal import igzip, isal_zlib

from market_pipeline.core.errors import InputDataError
from market_pipeline.core.read_ahead import read_ahead
from market_pipeline.core.telemetry.memory import HEAP_PIECE_BYTES

# Bytes of CSV text parsed at a time for a file of up to BLOCK_COLUMNS columns read (a block holds
# whole rows: a batch is one block's rows). A wider file's block grows with its columns, since each
# batch costs a polars expression or two a column (checks, casts): importing 200 k rows of
# book_snapshot_25 (84 columns read) took 3.1 CPU-s with 1 MB blocks, 2.3 with 2 MB and 2.2 with
# 4 MB. The bench day's incremental_book_L2 (34 M rows, 8 columns) took 10.7 s wall to check and
# convert in 1 MB blocks (14 k rows), 9.0 s in 2 MB (+51 MB resident) and 8.0 s in 4 MB (+145 MB).
# At least twice the header's length, since the first block must hold the header. Arrow's parser
# holds tens of times a block (35 MB at 1 MB).
BLOCK_BYTES = 2 << 20
BLOCK_COLUMNS = 64
# Consecutive blocks handed on as one batch (one frame, a column a chunk). Arrow's parser wants
# small blocks, but every batch costs the caller a dozen polars calls (checks, message keys,
# casts) and the cache writer a frame, whatever its rows: the bench day's incremental_book_L2
# (34 M rows) went from its file to its cache table in 12.1 s wall (16.6 CPU-s) a block at a
# time, 9.4 s with 8 blocks a batch, 8.9 s (15.2) with 16 and 8.7 s with 32 (on a slower hour of
# the machine, interleaved: 15.1-17.0, 11.8-12.9 and 11.4-12.1 s). Larger batches cost memory: the
# L2 file's peak resident memory grew from 348 MB to 447 (8), 520-590 (16) and 663 MB (32), and
# with 16 polars' allocator still held 45 MB more of freed batches once the three files were read
# (401 MB resident against 352-358 with 1 or 8; it lets them go about 10 s later), which the next
# steps of a run would carry.
BATCH_BLOCKS = 8
_ARROW_MAX_BLOCK_BYTES = (1 << 31) - 1  # an int32

_TEXT = pa.string()
# Column types by name; the level columns of book snapshots (not listed) are numbers.
_TYPES: dict[str, pa.DataType] = {
    "exchange": _TEXT,
    "symbol": _TEXT,
    "timestamp": pa.int64(),
    "local_timestamp": pa.int64(),
    "is_snapshot": pa.bool_(),
    "side": _TEXT,
    "price": pa.float64(),
    "amount": pa.float64(),
    "id": _TEXT,
}
_TRUE, _FALSE = ["true", "True", "TRUE"], ["false", "False", "FALSE"]


class TardisFormatError(InputDataError, ValueError):
    """A Tardis CSV file that cannot be read as its data type; names the file and the line."""

    def __init__(self, path: Path, line: int | None, reason: str):
        self.path = path
        self.line = line
        self.reason = reason
        where = f"{path}: line {line}" if line is not None else str(path)
        super().__init__(f"{where}: {reason}")


@dataclass(frozen=True)
class CsvBatch:
    """Consecutive rows of a file: `frame` (the wanted columns, typed) starts at line `line`."""

    line: int
    frame: pl.DataFrame


def _column_type(name: str) -> pa.DataType:
    return _TYPES.get(name, pa.float64())


# What inflating a damaged gzip file raises (BadGzipFile is an OSError; EOFError: truncated).
GZIP_ERRORS = (OSError, EOFError, isal_zlib.error)


def open_bytes(path: Path) -> io.BufferedIOBase:
    """The file's bytes, inflated by ISA-L (python-isal's igzip: 2.5x faster than zlib) when it is gzip."""
    return igzip.open(path, "rb") if path.name.endswith(".gz") else open(path, "rb")


class TextStream(io.RawIOBase):
    """The file's decompressed bytes for Arrow's CSV reader, a block at a time in Arrow's memory
    pool; remembers the last byte (a complete file ends with a newline) and a decompression
    failure (told apart from a CSV error)."""

    def __init__(self, path: Path):
        super().__init__()
        self._inner = open_bytes(path)
        self.size = 0
        self.last = b""
        self.ended = False  # the whole file was read
        self.failure: Exception | None = None

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # noqa: ANN001 - a writable bytes-like object
        """Fill `buffer` as far as the file goes, `HEAP_PIECE_BYTES` inflated at a time: a
        block-sized read got fresh pages from the kernel for every block (the bench day's L2 file,
        2.6 GB of CSV: 0.70 M page faults and 1.8-1.9 CPU-s of system time, against 34-40 k and
        0.6 s so)."""
        view = memoryview(buffer).cast("B")
        filled = 0
        try:
            while filled < len(view):
                inflated = self._inner.readinto(view[filled : filled + HEAP_PIECE_BYTES])
                if not inflated:
                    break
                filled += inflated
        except GZIP_ERRORS as exc:
            self.failure = exc
            raise
        if filled:
            self.size += filled
            self.last = bytes(view[filled - 1 : filled])
        elif len(view):
            self.ended = True
        return filled

    def read_buffer(self, size: int) -> pa.Buffer:
        """A block for Arrow's reader (which prefers this to `read`), in a buffer of Arrow's pool."""
        buffer = pa.allocate_buffer(size, resizable=True)
        buffer.resize(self.readinto(buffer))
        return buffer

    def cut_short(self, header_bytes: int) -> bool:
        """Whether the file ended (it has been read to its end) without a newline after its last row."""
        return self.ended and self.size > header_bytes and self.last != b"\n"

    def close(self) -> None:
        self._inner.close()
        super().close()


def read_header(path: Path, required: list[str]) -> tuple[list[str], int, bool]:
    """The header's column names (checked: UTF-8, no duplicates, every `required` column), its
    length in bytes with the newline, and whether anything can follow it (a header without its
    newline is the whole file)."""
    try:
        with open_bytes(path) as fh:
            first = fh.readline()
    except GZIP_ERRORS as exc:
        raise TardisFormatError(path, None, f"truncated or corrupt gzip: {exc}") from None
    if not first:
        raise TardisFormatError(path, None, "empty file (no header)")
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
    return header, len(first), first.endswith(b"\n")


def iter_csv_batches(path: Path, required: list[str]) -> Iterator[CsvBatch]:
    """The `required` columns of a Tardis CSV, typed, a block at a time in file order (an empty
    value is null, for the caller's checks to name; a short or long row is an error here).

    The next block is decompressed and parsed on a helper thread while the caller checks this one."""
    return read_ahead(_iter_csv_batches(path, required), "tardis-csv")


def _iter_csv_batches(path: Path, required: list[str]) -> Iterator[CsvBatch]:
    header, header_bytes, rows_follow = read_header(path, required)
    if not rows_follow:
        # The header alone without its newline: no rows. Decided here, from the bytes read_header
        # saw, because Arrow finds no block to parse in such a file and how far its read-ahead
        # thread has read when it says so is a matter of timing.
        return
    short_or_long: list[tuple[int | None, int, int]] = []

    def invalid_row(row: pa_csv.InvalidRow) -> str:
        short_or_long.append((row.number, row.actual_columns, row.expected_columns))
        return "error"

    stream = TextStream(path)
    block_bytes = _block_bytes(required, header_bytes)
    line = 2
    try:
        reader = pa_csv.open_csv(
            stream,
            read_options=pa_csv.ReadOptions(block_size=block_bytes, use_threads=False),
            parse_options=pa_csv.ParseOptions(invalid_row_handler=invalid_row),
            convert_options=pa_csv.ConvertOptions(
                column_types={name: _column_type(name) for name in required},
                include_columns=required,
                null_values=[""],
                strings_can_be_null=True,
                true_values=_TRUE,
                false_values=_FALSE,
            ),
        )
        while blocks := list(itertools.islice(reader, BATCH_BLOCKS)):
            # The reader has seen the end of the file before it makes the last block: a cut-short last
            # line is named before any check of that batch's rows (whose last value may be cut).
            _check_ending(path, stream, header_bytes)
            frame = pl.from_arrow(pa.Table.from_batches(blocks))  # one copy, a chunk a column
            del blocks  # not held while the next ones are parsed
            assert isinstance(frame, pl.DataFrame)
            yield CsvBatch(line, frame)
            line += frame.height
    except (pa.ArrowException, UnicodeDecodeError, *GZIP_ERRORS) as exc:
        _check_ending(path, stream, header_bytes)  # a cut-short last line explains a short last row
        raise _explain(path, stream, exc, short_or_long, header, required, line, block_bytes) from None
    finally:
        stream.close()
    _check_ending(path, stream, header_bytes)


def _block_bytes(required: list[str], header_bytes: int) -> int:
    wide = BLOCK_BYTES * max(len(required), BLOCK_COLUMNS) // BLOCK_COLUMNS
    return max(min(wide, _ARROW_MAX_BLOCK_BYTES), 2 * header_bytes)


def _check_ending(path: Path, stream: TextStream, header_bytes: int) -> None:
    if stream.cut_short(header_bytes):
        raise TardisFormatError(path, None, "the last line does not end with a newline (truncated file?)")


def _explain(
    path: Path,
    stream: TextStream,
    exc: BaseException,
    short_or_long: list[tuple[int | None, int, int]],
    header: list[str],
    required: list[str],
    line: int,
    block_bytes: int,
) -> TardisFormatError:
    """The error for a block (of `block_bytes`) that could not be read, whose first line is `line`."""
    if stream.failure is not None:
        return TardisFormatError(path, None, f"truncated or corrupt gzip: {stream.failure}")
    if short_or_long and short_or_long[0][0] is not None:
        number, actual, expected = short_or_long[0]
        return TardisFormatError(path, number, f"{actual} fields where the header has {expected}")
    located = locate_bad_value(path, header, required, line, block_bytes)
    return located or TardisFormatError(path, None, f"unparsable CSV: {str(exc).splitlines()[0]}")


def locate_bad_value(
    path: Path, header: list[str], wanted: list[str], start: int, longest: int
) -> TardisFormatError | None:
    """The first line from `start` whose shape or values do not parse, for a clear error (slow:
    only on failure, and from the failing block on); `longest` is the block Arrow parsed in, which
    reads no longer row."""
    index = {name: header.index(name) for name in wanted}
    line_no = 0  # of the line read last

    def lines(fh: io.TextIOWrapper) -> Iterator[str]:
        """The lines from `start`, none read whole past `longest` (a damaged file's run of zeros)."""
        nonlocal line_no
        while line := fh.readline(longest + 1):
            line_no += 1
            if len(line) > longest:
                raise _RowTooLong()
            if line_no >= start:
                yield line

    with open_bytes(path) as raw, io.TextIOWrapper(raw, encoding="utf-8", errors="replace", newline="") as fh:
        try:
            for row in csv.reader(lines(fh)):
                if len(row) != len(header):
                    return TardisFormatError(path, line_no, f"{len(row)} fields where the header has {len(header)}")
                for name, i in index.items():
                    value, kind = row[i], _column_type(name)
                    if value == "":
                        continue  # empty values are reported by the value checks
                    try:
                        if kind == pa.int64():
                            int(value)
                        elif kind == pa.float64():
                            float(value)
                        elif kind == pa.bool_() and value not in _TRUE + _FALSE:
                            raise ValueError
                    except ValueError:
                        return TardisFormatError(path, line_no, f"column {name!r}: {value!r} is not {_kind_name(kind)}")
        except _RowTooLong:
            return TardisFormatError(
                path, line_no, f"not a Tardis row: longer than the {longest:,} bytes parsed at a time"
            )
        except csv.Error as exc:  # a value past the csv module's limit (128 KB) in a shorter row
            return TardisFormatError(path, line_no, f"not a Tardis row: {exc}")
    return None


class _RowTooLong(Exception):
    """A line longer than Arrow's block, met while locating a bad value."""


def _kind_name(kind: pa.DataType) -> str:
    return {pa.int64(): "an integer", pa.float64(): "a number", pa.bool_(): "true/false"}.get(kind, "text")

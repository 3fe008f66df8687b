"""Capture files of every exchange, in the project's format: gzip (or plain, or encrypted with
PIPELINE_MASTER_KEY), one line per WebSocket message, `<receive time ns> <message as received>`.
The exchanges' vendor packages (vendors/binance, vendors/kraken) read their files through here:
opening, line splitting and the error that names the file and line."""

from __future__ import annotations

import gzip
import io
import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from decimal import Decimal
from itertools import islice
from pathlib import Path
from typing import IO, Any

import msgspec
import numpy as np
from isal import isal_zlib

from market_pipeline.core.errors import CaptureError
from market_pipeline.core.reused_arrays import ReusedArrays
from market_pipeline.core.security import crypto
from market_pipeline.core.telemetry.memory import HEAP_PIECE_BYTES

_GZIP_MAGIC = b"\x1f\x8b"
_NEWLINE = ord("\n")
# Compressed bytes read at a time: each inflation of a piece copies the input it leaves over
# (isal's `unconsumed_tail`), so no more than about a piece's worth (the bench day's capture, 14 M
# lines: 160-170 k page faults and 4.3-5.6 s with 128 KB, 75-84 k and 4.1-4.7 s with 16 KB).
_GZIP_INPUT_BYTES = 16 * 1024
LINE_BATCH = 10_000  # lines decoded from the stream at a time
# Lines a capture parser turns into table rows at a time: a chunk of 100 k lines of a busy day
# holds about 300 k level rows.
CHUNK_LINES = 100_000
_READ_BYTES = 1 << 20  # decompressed bytes `line_chunks` takes from the stream at a time
# Chunk texts `line_chunks` keeps for reuse: those being decoded, queued for it, and read ahead.
CHUNK_TEXTS = 8
# No exchange message comes near this: the real captures' longest line is a 64 KB REST book
# snapshot (Binance spot), and 5,000 levels a side would be about 350 KB. A longer run without a
# newline is a damaged file (a plain one a crash left filled with zeros, a gzip bomb), which a
# reader of lines would otherwise hold whole: a 300 MB run took the Binance parser to 1.2 GB.
MAX_LINE_BYTES = 16 << 20


class CaptureFormatError(CaptureError, ValueError):
    """A capture line (or file) that cannot be read; names the file and the 1-based line in it."""

    def __init__(self, path: Path | str, line_number: int | None, reason: str) -> None:
        self.path = Path(path)
        self.line_number = line_number
        self.reason = reason
        where = f"{self.path}:{line_number}" if line_number is not None else str(self.path)
        super().__init__(f"{where}: {reason}")


class LineTooLong(OSError):
    """A run of more than `MAX_LINE_BYTES` without a newline: the file is damaged, and read as
    unreadable from there on, as a corrupt gzip is (BadGzipFile is an OSError too)."""

    def __init__(self) -> None:
        super().__init__(f"no newline within {MAX_LINE_BYTES >> 20} MB: not a capture line (a damaged file?)")


def _line_run(run: int, data: bytes) -> int:
    """The bytes after the last newline once `data` follows `run` bytes without one; past
    `MAX_LINE_BYTES`, `LineTooLong`. Data is read a few MB at most at a time, so only data holding
    no newline is refused: every line read whole before it is given."""
    last = data.rfind(b"\n")
    run = len(data) - last - 1 if last >= 0 else run + len(data)
    if run > MAX_LINE_BYTES:
        raise LineTooLong()
    return run


class _LineBounded(io.RawIOBase):
    """`inner`'s bytes, refused (`LineTooLong`) once more than `MAX_LINE_BYTES` of them follow the
    last newline, before any reader of lines holds them whole: every line read whole before them is
    given. (`_GzipMembers` bounds its lines itself, saving a layer of Python calls: reading the bench
    day's capture a line at a time makes 363 k reads.)"""

    def __init__(self, inner: IO[bytes]) -> None:
        super().__init__()
        self._inner = inner
        self._run = 0  # bytes read since the last newline

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int | None:  # noqa: ANN001 - a writable bytes-like object
        read = self._inner.readinto(buffer)
        if read:
            view = memoryview(buffer).cast("B")
            # Copies on the C heap, not fresh pages: the bench day's capture as a plain 3 GB file took
            # 0.82 CPU-s to read in chunks of lines so, 0.59 looking back from each read's end only.
            for start in range(0, read, HEAP_PIECE_BYTES):
                self._run = _line_run(self._run, bytes(view[start : min(start + HEAP_PIECE_BYTES, read)]))
        return read

    def close(self) -> None:
        try:
            super().close()
        finally:
            self._inner.close()


def _bounded(raw: IO[bytes]) -> IO[bytes]:
    """`raw` buffered for line reading, its lines bounded (`_LineBounded`)."""
    return io.BufferedReader(_LineBounded(raw), buffer_size=64 * 1024)  # type: ignore[return-value]


@dataclass(frozen=True)
class LineChunk:
    """Consecutive lines of a file as one text: line i is `text[ends[i - 1]:ends[i]]` (with its
    newline; the file's last line may have none)."""

    text: np.ndarray  # uint8, writable
    ends: np.ndarray  # int64, each line's end offset in `text`

    def __len__(self) -> int:
        return len(self.ends)

    def lines(self, rows: Iterable[int] | None = None) -> list[bytes]:
        """The lines (those of index `rows`, else all) as bytes, each with its newline."""
        bounds, text = [0, *self.ends.tolist()], memoryview(self.text)
        return [text[bounds[i] : bounds[i + 1]].tobytes() for i in (range(len(self.ends)) if rows is None else rows)]


def line_chunks(stream: IO[bytes], size: int) -> Iterator[tuple[LineChunk, BaseException | None]]:
    """The stream's lines in chunks of `size` (the last one shorter), split where `readline`
    splits, without a Python object per line; the last chunk comes with the error that stopped the
    reading, if any (a truncated gzip, a chunk failing authentication): then it holds the lines
    read whole before it, and the line the error cut is not one of them.

    The stream is read straight into each chunk's text (`readinto1`: one read of the stream at a
    time, so a read that fails loses nothing read before it), an array left uninitialised: zeroing
    it, or reading into fresh buffers and copying them, cost a page fault a page of text. Reading
    the bench day's capture (14 M lines) took 5.9 CPU-s so, 11.1 with a growing bytearray. A
    chunk's text takes the memory of one no longer referred to (`ReusedArrays`), not fresh pages."""
    newline = np.empty(_READ_BYTES, dtype=bool)  # reused by every read
    texts = ReusedArrays(CHUNK_TEXTS)
    carry, carry_ends = np.zeros(0, dtype=np.uint8), np.zeros(0, dtype=np.int64)  # after the last chunk
    capacity = 4 * _READ_BYTES
    while True:
        text = texts.empty(max(capacity, len(carry) + _READ_BYTES), np.uint8)
        text[: len(carry)] = carry
        filled, ends, counted = len(carry), [carry_ends], len(carry_ends)
        stopped: BaseException | None = None
        ended = False
        while counted < size:
            if filled + _READ_BYTES > len(text):
                text = np.concatenate([text[:filled], np.empty(len(text), dtype=np.uint8)])
            try:
                read = stream.readinto1(memoryview(text)[filled : filled + _READ_BYTES])  # type: ignore[attr-defined]
            except (EOFError, OSError) as exc:
                stopped = exc
                break
            if not read:
                ended = True
                break
            found = np.flatnonzero(np.equal(text[filled : filled + read], _NEWLINE, out=newline[:read]))
            found += filled + 1
            ends.append(found)
            counted += len(found)
            filled += read
        flat = np.concatenate(ends)
        if stopped is not None or ended:
            if ended and filled > (flat[-1] if len(flat) else 0):  # the last line, without its newline
                flat = np.append(flat, filled)
            if len(flat) or stopped is not None:
                yield LineChunk(text[: int(flat[-1]) if len(flat) else 0], flat), stopped
            return
        chunk_ends = flat[:size]
        length = int(chunk_ends[-1])
        carry, carry_ends = text[length:filled].copy(), flat[size:] - length
        capacity = length + length // 4 + _READ_BYTES  # the next chunk's text is about as long
        yield LineChunk(text[:length], chunk_ends), None


def open_capture(path: Path) -> IO[bytes]:
    """Open a capture for binary line reading, gunzipping when the file starts with the gzip magic.

    The single place files are opened. Encrypted files (``market_pipeline.core.security.crypto``,
    recognised by their header, whatever the name) are decrypted on the fly with
    PIPELINE_MASTER_KEY; each chunk is authenticated before it is read. A line longer than
    `MAX_LINE_BYTES` makes the file unreadable from there on (`LineTooLong`).
    """
    with open(path, "rb") as probe:
        magic = probe.read(len(crypto.MAGIC))
    if crypto.is_encrypted(magic):
        return _open_encrypted_capture(Path(path))
    if magic[: len(_GZIP_MAGIC)] == _GZIP_MAGIC:
        return _gunzipped(open(path, "rb"))  # noqa: SIM115 - the caller closes it
    return _bounded(io.FileIO(path))  # type: ignore[arg-type]


def _gunzipped(source: IO[bytes]) -> IO[bytes]:
    """`source`'s gzip members decompressed, read line by line in C (closing it closes `source`)."""
    return io.BufferedReader(_GzipMembers(source), buffer_size=64 * 1024)  # type: ignore[return-value]


class _GzipMembers(io.RawIOBase):
    """The decompressed bytes of every member of a gzip stream, as the stdlib's GzipFile gives them,
    inflated by ISA-L (python-isal's `isal_zlib`, which also checks each member's CRC and length),
    its lines bounded as `_LineBounded` bounds them.

    Measured on a synthetic capture day (2.2 M lines, 70 MB .gz), in CPU seconds, best of 3: reading
    its lines in chunks took 1.87 with `gzip.open` and 0.85 through this reader (the stdlib's
    GzipFile also runs Python for every line). isal's own `igzip.open` (0.71) is not used: on a
    truncated file its reader drops the lines decompressed in the read that meets the end, so the
    error would not name the first line that could not be read. Here, as in the stdlib, a read
    returns what it decompressed and the next one raises EOFError.
    """

    def __init__(self, source: IO[bytes]) -> None:
        super().__init__()
        self._source = source
        self._inflate = isal_zlib.decompressobj(wbits=16 + isal_zlib.MAX_WBITS)  # gzip header and trailer
        self._pending = b""  # compressed bytes read, not yet inflated
        self._failure: EOFError | OSError | None = None  # met after a read's first bytes: raised next
        self._run = 0  # bytes inflated since the last newline (`_line_run`)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # noqa: ANN001 - a writable bytes-like object
        """Fill `buffer` as far as the stream goes, `HEAP_PIECE_BYTES` inflated at a time: inflated a
        read (1 MB) at once, every read got fresh pages from the kernel (reading the bench day's
        capture, 14 M lines: 0.82 M page faults and 2.4-2.6 s of system time, against 0.17 M and
        1.0-1.3 s so, 6.2-6.5 s of wall against 4.9-5.3). An error met once some bytes are in is
        raised by the next call: a read returns everything decompressed before the error, as one
        inflation a read did."""
        if self._failure is not None:
            failure, self._failure = self._failure, None
            raise failure
        view = memoryview(buffer).cast("B")
        filled = 0
        while filled < len(view):  # decompress(..., 0) would mean no limit
            try:
                data = self._inflated(min(HEAP_PIECE_BYTES, len(view) - filled))
            except (EOFError, OSError) as exc:  # truncated, corrupt, or (encrypted) not authentic
                if not filled:
                    raise
                self._failure = exc
                break
            if not data:
                break
            self._run = _line_run(self._run, data)
            view[filled : filled + len(data)] = data
            filled += len(data)
        return filled

    def _inflated(self, size: int) -> bytes:
        while True:
            if self._inflate.eof:  # a member ended: another may follow, after zero padding
                following = (self._inflate.unused_data + self._pending).lstrip(b"\0")
                while not following:
                    more = self._source.read(_GZIP_INPUT_BYTES)
                    if not more:
                        return b""
                    following = more.lstrip(b"\0")
                if len(following) < len(_GZIP_MAGIC):
                    following += self._source.read(_GZIP_INPUT_BYTES)
                if following[: len(_GZIP_MAGIC)] != _GZIP_MAGIC:
                    raise gzip.BadGzipFile(f"Not a gzipped file ({following[:2]!r})")
                self._inflate = isal_zlib.decompressobj(wbits=16 + isal_zlib.MAX_WBITS)
                self._pending = following
            if not self._pending:
                self._pending = self._source.read(_GZIP_INPUT_BYTES)
                if not self._pending:
                    raise EOFError("Compressed file ended before the end-of-stream marker was reached")
            try:
                data = self._inflate.decompress(self._pending, size)
            except isal_zlib.error as exc:  # a bad header, corrupt data, a CRC or length mismatch
                raise gzip.BadGzipFile(f"corrupt gzip: {exc}") from None
            self._pending = self._inflate.unconsumed_tail
            if data:
                return data

    def close(self) -> None:
        try:
            super().close()
        finally:
            self._source.close()


def _open_encrypted_capture(path: Path) -> IO[bytes]:
    plain = None
    try:
        plain = crypto.open_decrypted(path)
        head = plain.peek(len(_GZIP_MAGIC))[: len(_GZIP_MAGIC)]  # authenticates the first chunk
    except crypto.MasterKeyError as exc:
        raise CaptureFormatError(path, None, f"encrypted capture: {exc}") from None
    except crypto.DecryptionError as exc:
        if plain is not None:
            plain.close()
        raise CaptureFormatError(path, None, exc.reason) from None
    return _gunzipped(plain) if head == _GZIP_MAGIC else _bounded(plain)  # type: ignore[arg-type]


def located_lines(paths: Sequence[Path]) -> Iterator[tuple[Path, int, int, str]]:
    """(path, 1-based line in the file, receive ns, message text) of every line of the files, in
    order, read LINE_BATCH lines at a time (decoding text in bulk is faster than line by line)."""
    for path in paths:
        path = Path(path)
        line_number = 0
        with io.TextIOWrapper(open_capture(path), encoding="utf-8") as stream:
            while True:
                try:
                    batch = list(islice(stream, LINE_BATCH))
                except (EOFError, OSError, UnicodeDecodeError) as exc:  # truncated/corrupt file
                    raise CaptureFormatError(path, _first_unreadable_line(path), f"unreadable: {exc}") from exc
                if not batch:
                    break
                for line in batch:
                    line_number += 1
                    stamp, _, body = line.partition(" ")
                    try:
                        recv_ns = int(stamp)
                    except ValueError:
                        raise CaptureFormatError(
                            path, line_number, f"receive time {stamp[:40]!r} is not an integer"
                        ) from None
                    yield path, line_number, recv_ns, body


def _first_unreadable_line(path: Path) -> int:
    """The 1-based number of the first line of a damaged file that cannot be read whole: the file
    read again, on the error's path only (a batch of lines that fails is lost whole)."""
    whole = 0
    with open_capture(path) as stream:
        try:
            for line in stream:
                line.decode("utf-8")
                whole += 1
        except (EOFError, OSError, UnicodeDecodeError):
            pass
    return whole + 1


# Measured on a synthetic Kraken v2 capture (5,000 updates), decoding and classifying a line:
# msgspec with Decimal floats 4.7 us, the stdlib's json with parse_float=Decimal 8.7 us, with
# parse_float=str 9.0 us. A Decimal keeps the number's text: str(Decimal("0.00100000")) is it.
_DECODER = msgspec.json.Decoder(float_hook=Decimal)


def decode_json(body: str) -> Any:
    """A JSON message with its numbers as Decimals (their text as sent) or ints. A line msgspec
    refuses is read again with the stdlib's json, whose reason the error gives (as Binance's)."""
    try:
        return _DECODER.decode(body)
    except msgspec.DecodeError:
        return json.loads(body, parse_float=Decimal)

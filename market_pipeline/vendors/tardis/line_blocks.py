"""A Tardis CSV file read by a numba reader of its lines (`l2_text`, `snapshot_text`), in blocks of
whole lines, as long as every line is in the one shape Tardis writes.

Arrow's CSV reader (`csv_stream`) parses any CSV and names what is wrong with it, but on the bench
day's files its tokenizer and number parsers were 4.8 of the 14.2 CPU-s the three files took to
their cache tables, on the thread that hands the rows on, and the checks of its rows 1.3 more. A
line reader takes only lines in Tardis's shape: the header's columns in the header's order, the
file name's exchange and symbol byte for byte, positive integer times (microseconds, within int64
once in nanoseconds), numbers in `number_text.scientific`'s shape (read to the double Arrow
reads) and `\\n` ending every line. Every such row passes the file's checks (csv_format's
`RowChecks`). At the first line in any other shape (or a damaged gzip, or a last line without its
newline) it stops, having handed on only the whole lines before it; Arrow's reader then reads the
file from its start, skips the rows already handed on and goes on (csv_format), so whatever it
accepts or refuses, and the line it names, are as if it had read the file alone.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

import numba as nb
import numpy as np
import polars as pl

from market_pipeline.core.read_ahead import read_ahead
from market_pipeline.core.telemetry.memory import HEAP_PIECE_BYTES
from market_pipeline.vendors.tardis.csv_stream import GZIP_ERRORS, open_bytes

# Text decoded at a time (about 220 k rows of the bench day's L2 file): a batch as large as
# csv_stream's (8 blocks of 2 MB), as each costs its caller a dozen polars calls.
BLOCK_BYTES = 16 << 20
COMMA, NEWLINE = ord(","), ord("\n")
_ZERO, _NINE = ord("0"), ord("9")
_MAX_MICROSECONDS = np.iinfo(np.int64).max // 1_000  # csv_format makes nanoseconds of them

# (block of whole lines) -> (its rows up to the first line not in the shape, whether every line was)
Decoder = Callable[[np.ndarray], tuple[pl.DataFrame, bool]]


@nb.njit(cache=True, nogil=True, inline="always")
def literal(text, p, end, word):
    """Past `word` at p, or -1."""
    if end - p < word.shape[0]:
        return -1
    for k in range(word.shape[0]):
        if text[p + k] != word[k]:
            return -1
    return p + word.shape[0]


@nb.njit(cache=True, nogil=True, inline="always")
def time_field(text, p, end):
    """(past the comma, value) of a positive time in microseconds at p, 1 to 18 digits; (-1, 0)
    else. (Counting the digits instead of checking each step for overflow made the L2 reader 10%
    faster.)"""
    value = 0
    start = p
    while p < end and _ZERO <= text[p] <= _NINE:
        value = value * 10 + (text[p] - _ZERO)
        p += 1
    if p == start or p - start > 18 or p >= end or text[p] != COMMA or value <= 0 or value > _MAX_MICROSECONDS:
        return -1, 0
    return p + 1, value


@nb.njit(cache=True, nogil=True, inline="always")
def line_head(text, p, end, exchange, symbol):
    """(past, timestamp, local_timestamp) of the fields every Tardis line starts with, at p: the
    file name's exchange and symbol (`field_bytes`) and the two times; past is -1 when they are
    not in the shape."""
    p = literal(text, p, end, exchange)
    if p >= 0:
        p = literal(text, p, end, symbol)
    timestamp = local = 0
    if p >= 0:
        p, timestamp = time_field(text, p, end)
    if p >= 0:
        p, local = time_field(text, p, end)
    return p, timestamp, local


def field_bytes(value: str) -> np.ndarray:
    """The bytes a line's text field holds, with the comma after it (a `literal` to match)."""
    return np.frombuffer(f"{value},".encode(), dtype=np.uint8)


class LineBlocks:
    """The rows `decode` makes of a file with the `header` columns, block by block (`frames`), as long
    as its lines are in the shape; then `rows` is how many were handed on and `whole` whether that
    was the whole file."""

    def __init__(self, path: Path, header: list[str], decode: Decoder):
        self.path, self.decode = path, decode
        self.header = (",".join(header) + "\n").encode()
        self.rows = 0
        self.whole = False
        self._ended = False  # the blocks reached the file's end, its last line whole

    def frames(self) -> Iterator[pl.DataFrame]:
        try:
            with open_bytes(self.path) as stream:
                if stream.readline(len(self.header) + 1) != self.header:
                    return
                # The next block is inflated on a helper thread while this one is decoded.
                for text in read_ahead(self._line_blocks(stream), "tardis-inflate"):
                    frame, complete = self.decode(text)
                    if frame.height:
                        self.rows += frame.height
                        yield frame
                    if not complete:
                        return
                self.whole = self._ended
        except GZIP_ERRORS:
            return  # Arrow's reader names the damage

    def _line_blocks(self, stream: BinaryIO) -> Iterator[np.ndarray]:
        """The stream's text in blocks of whole lines. Three buffers, each filled again in turn (no
        fresh pages): one being decoded, one being filled, and the one before, whose cut last line
        is moved to the front of the next."""
        buffers = [np.empty(BLOCK_BYTES, dtype=np.uint8) for _ in range(3)]
        cut = buffers[0][:0]  # the last block's cut line
        for turn in itertools.count():
            text = buffers[turn % 3]
            text[: len(cut)] = cut
            filled = _fill(stream, text, len(cut))
            if filled == len(cut):  # the end of the file
                self._ended = not len(cut)  # a last line without its newline is Arrow's to name
                return
            last = _last_newline(text[:filled])
            if last < 0:  # a block without a whole line: not a Tardis row
                return
            yield text[: last + 1]
            cut = text[last + 1 : filled]


def _fill(stream: BinaryIO, text: np.ndarray, start: int) -> int:
    """Read the stream into `text` from `start` until it is full or the stream ends; the bytes in
    it. Read in pieces of `HEAP_PIECE_BYTES`: inflating into a whole block at once took 2.4 CPU-s
    for the bench day's 2.6 GB of L2 text, against 1.5 so."""
    view = memoryview(text)
    filled = start
    while filled < len(text):
        read = stream.readinto(view[filled : min(len(text), filled + HEAP_PIECE_BYTES)])
        if not read:
            break
        filled += read
    return filled


def _last_newline(text: np.ndarray) -> int:
    """The index of the last newline in `text`, or -1; looked for from the end (a line is short)."""
    span = 4096
    while True:
        start = max(0, len(text) - span)
        found = np.flatnonzero(text[start:] == NEWLINE)
        if len(found):
            return start + int(found[-1])
        if not start:
            return -1
        span *= 16

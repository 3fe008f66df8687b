"""One pass over a chunk of capture lines for the bulk decoder (`capture_bulk`): each line's
receive time, the kind of its combined-stream message (from the channel its `stream` names) and
where the message starts; then the messages of one kind copied, one after another, into the text
Arrow's JSON reader parses.

The scan reads only what it must to sort the lines: a plain run of digits and a space, then
`{"stream":"<symbol>@<channel>`, byte for byte. A line in any other shape is OTHER, and the
decoder hands it to the line path (`capture_stream._collect`), which reads it or refuses the chunk
to the line path whole: the scan never decides what a line means, only where the fast path may go.
Per million lines of the bench day's capture, the regex and gathers this replaces took 1.8 CPU-s
(Arrow's `extract_regex` 0.85, each stamp's digits gathered into an array and cast 0.92); the
scan takes 0.25 and the copies for Arrow 0.1 (bytes copied one at a time: a slice assignment was
0.03 s faster a million lines but took numba 4 s more to compile).
"""

from __future__ import annotations

import numba as nb
import numpy as np

from market_pipeline.core.borrowed_arrays import borrowed
from market_pipeline.vendors.binance.capture_format import CHANNEL_KINDS

OTHER = -1  # kind of a line that is not a combined-stream message of a channel in CHANNEL_KINDS
KINDS = tuple(CHANNEL_KINDS.values())  # a line's kind is its index here
# value * 10 + digit stays within int64 while value < _TENTH, or value == _TENTH and digit <= _LAST_DIGIT.
_TENTH, _LAST_DIGIT = divmod(np.iinfo(np.int64).max, 10)
_PREFIX = np.frombuffer(b'{"stream":"', dtype=np.uint8)
_SPACE, _NEWLINE, _QUOTE, _AT, _ZERO, _NINE = (ord(c) for c in ' \n"@09')


def _channel_table() -> tuple[np.ndarray, np.ndarray]:
    """The channels of CHANNEL_KINDS as rows of bytes (zero-padded) and their lengths, in KINDS' order."""
    names = [channel.encode() for channel in CHANNEL_KINDS]
    table = np.zeros((len(names), max(map(len, names))), dtype=np.uint8)
    for row, name in enumerate(names):
        table[row, : len(name)] = np.frombuffer(name, dtype=np.uint8)
    return table, np.array([len(name) for name in names], dtype=np.int64)


_CHANNELS, _CHANNEL_LENGTHS = _channel_table()


def scan_lines(text: np.ndarray, ends: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(receive time, kind, offset of the message) of every line (`LineChunk`'s text and ends);
    None when a line does not start with an int64 of plain digits and a space (the line path
    reads the chunk, and names the line)."""
    received = np.empty(len(ends), dtype=np.int64)
    kinds = np.empty(len(ends), dtype=np.int8)
    bodies = np.empty(len(ends), dtype=np.int64)
    if _scan(text, ends, _PREFIX, _CHANNELS, _CHANNEL_LENGTHS, received, kinds, bodies) >= 0:
        return None
    return received, kinds, bodies


def join_messages(text: np.ndarray, ends: np.ndarray, bodies: np.ndarray, kinds: np.ndarray) -> list[np.ndarray]:
    """For each kind of KINDS, the messages of its lines one after another, each ending in a newline."""
    lengths = ends - bodies
    lengths[-1] += text[ends[-1] - 1] != _NEWLINE  # the file's last line may lack its newline
    sizes = np.bincount(kinds + 1, weights=lengths, minlength=len(KINDS) + 1)[1:].astype(np.int64)
    out = np.empty(int(sizes.sum()), dtype=np.uint8)
    starts = np.concatenate([np.zeros(1, dtype=np.int64), np.cumsum(sizes)])
    _join(text, ends, bodies, kinds, starts, out)
    return [out[starts[k] : starts[k + 1]] for k in range(len(KINDS))]


@nb.njit(cache=True, nogil=True)
def _scan(text, ends, prefix, channels, channel_lengths, received, kinds, bodies):
    """Fill received, kinds and bodies line by line; the index of the first line whose receive
    time is not plain digits within int64 followed by a space, else -1."""
    args = borrowed((text, ends, prefix, channels, channel_lengths, received, kinds, bodies))
    text, ends, prefix, channels, channel_lengths, received, kinds, bodies = args
    start = 0
    for i in range(ends.shape[0]):
        end = ends[i]
        p, value = digits(text, start, end)
        if p <= start or p == end or text[p] != _SPACE:
            return i
        received[i] = value
        bodies[i] = p + 1
        kinds[i] = _kind(text, p + 1, end, prefix, channels, channel_lengths)
        start = end
    return -1


@nb.njit(cache=True, nogil=True)
def digits(text, p, end):
    """(past, value) of the run of ASCII digits at p (maybe none: past is p) as an int64; (-1, 0)
    when the value is past int64's."""
    value = 0
    while p < end and _ZERO <= text[p] <= _NINE:
        digit = text[p] - _ZERO
        if value >= _TENTH and (value > _TENTH or digit > _LAST_DIGIT):
            return -1, 0
        value = value * 10 + digit
        p += 1
    return p, value


@nb.njit(cache=True, nogil=True)
def _kind(text, body, end, prefix, channels, channel_lengths):
    """The index in KINDS of the message at `body` by the channel its stream names (what follows the
    first '@' up to a '"' or '@'), OTHER unless it starts `{"stream":"<no '"'>@`."""
    n = prefix.shape[0]
    if end - body < n:
        return OTHER
    for k in range(n):
        if text[body + k] != prefix[k]:
            return OTHER
    p = body + n
    while p < end and text[p] != _AT:
        if text[p] == _QUOTE:
            return OTHER
        p += 1
    first = p + 1
    p = first
    while p < end and text[p] != _QUOTE and text[p] != _AT:
        p += 1
    length = p - first
    for row in range(channels.shape[0]):
        if channel_lengths[row] == length:
            same = True
            for k in range(length):
                if text[first + k] != channels[row, k]:
                    same = False
                    break
            if same:
                return row
    return OTHER


@nb.njit(cache=True, nogil=True)
def _join(text, ends, bodies, kinds, starts, out):
    """Copy each line's message to its kind's place in `out` (from starts[kind]), newline-ended."""
    at = starts[:-1].copy()
    for i in range(ends.shape[0]):
        kind = kinds[i]
        if kind == OTHER:
            continue
        o = at[kind]
        for p in range(bodies[i], ends[i]):
            out[o] = text[p]
            o += 1
        if text[ends[i] - 1] != _NEWLINE:
            out[o] = _NEWLINE
            o += 1
        at[kind] = o

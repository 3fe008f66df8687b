"""A chunk's bookTickers and trades decoded in one pass of numba, when every one of a kind is in
the shape Binance sends: `{"stream":"<s>@bookTicker","data":{"u":..,"s":"..","b":"<price>",
"B":"<size>","a":"<price>","A":"<size>"}}` (futures add `e`, `E`, `T`) and `{"stream":"<s>@trade",
"data":{"e":"trade","E":..,"s":"..","t":..,"p":"..","q":"..","T":..,"m":true}}` (spot adds `M`,
futures `X`): compact, fields in any order, each read field at most once, the values as
`capture_json` reads them.

The message's `data` fields are flat (no arrays), so one kernel reads both kinds from a table of
the fields of each (`TICKER`, `TRADE`): each field named by one letter is an integer, a decimal, a
boolean or the symbol, read into its row of the output; a field the line path would check but this
kind does not read (a level list in a trade, `pu`) declines the messages; any other field is
skipped when its value is a string, an integer or a boolean, as the line path ignores it. Whatever
else a message holds sends its kind to Arrow's reader (`capture_bulk._parse`), which hands what it
does not read to the line path.

Per million lines of the real USD-M capture (70 % bookTickers, 23 % trades), the bulk decode took
2.9 CPU-s with Arrow's reader reading them (half of it in the reader) and 1.8 s with this pass
(0.6 s in it); the real spot captures' 2.2-2.3 s became 1.4-1.6 s.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba as nb
import numpy as np

from market_pipeline.core.borrowed_arrays import borrowed
from market_pipeline.vendors.binance.capture_json import (
    DATA_KEY,
    POWERS,
    boolean,
    data_end,
    data_start,
    decimal,
    integer,
    is_pu,
    key_end,
    message_end,
    same_symbol,
    simple_value_end,
    string_end,
    value_end,
)

# What a field's value is, by the first letter of its name (a field named by more letters is
# skipped, but `pu`, a diff's).
_DECLINE, _SKIP, _INTEGER, _DECIMAL, _BOOLEAN, _SYMBOL = range(6)
# The fields of `capture_stream._Data`, which the line path reads with a type whatever the kind:
# one a kind does not read is declined, not skipped.
_CHECKED = "ETsUupbaBApqtm"
_SYMBOL_BIT = 1 << 62  # `s`: not in a kind's rows, but at most once


@dataclass(frozen=True)
class FlatKind:
    """The fields of a kind's `data`: integers (into int64 rows, in this order; `m`, a boolean, as
    0 or 1), decimals (into float64 rows) and which of them each message must carry."""

    integers: tuple[str, ...]
    decimals: tuple[str, ...]
    required: str

    def table(self) -> np.ndarray:
        """[what, row, bit] of each one-letter field name, indexed by the letter's byte."""
        table = np.zeros((128, 3), dtype=np.int64)
        table[:, 0] = _SKIP
        for letter in _CHECKED:
            table[ord(letter), 0] = _DECLINE
        table[ord("s")] = (_SYMBOL, 0, _SYMBOL_BIT)
        for row, name in enumerate(self.integers):
            table[ord(name)] = (_BOOLEAN if name == "m" else _INTEGER, row, self.bit(name))
        for row, name in enumerate(self.decimals):
            table[ord(name)] = (_DECIMAL, row, self.bit(name))
        return table

    def required_bits(self) -> int:
        return sum(self.bit(name) for name in self.required)

    def bit(self, name: str) -> int:
        """The field's bit in `FlatMessages.present`."""
        return 1 << (self.integers + self.decimals).index(name)


TICKER = FlatKind(integers=("E", "T", "u"), decimals=("b", "B", "a", "A"), required="ubBaA")
TRADE = FlatKind(integers=("E", "T", "t", "m"), decimals=("p", "q"), required="tpqTm")


@dataclass(frozen=True)
class FlatMessages:
    """The messages of one kind read: `integers[i]` and `decimals[j]` the rows of the kind's
    fields, `present` a bit a field (`FlatKind.bit`) each message carries, `symbol` the bytes of
    the one `s` they name (empty when none names one)."""

    integers: np.ndarray  # int64 [len(kind.integers), n]; 0 where absent
    decimals: np.ndarray  # float64 [len(kind.decimals), n]
    present: np.ndarray  # int64 [n]
    symbol: bytes

    def has(self, kind: FlatKind, name: str) -> np.ndarray:
        """Whether each message carries the field `name`."""
        return (self.present & kind.bit(name)) != 0


def decode_flat(
    text: np.ndarray, ends: np.ndarray, bodies: np.ndarray, rows: np.ndarray, kind: FlatKind
) -> FlatMessages | None:
    """The messages of `kind` on lines `rows` of a `LineChunk` (`bodies`: where each line's message
    starts, from `capture_scan`); None unless every one is in the kind's shape and they name one symbol."""
    integers = np.zeros((len(kind.integers), len(rows)), dtype=np.int64)
    decimals = np.empty((len(kind.decimals), len(rows)), dtype=np.float64)
    present = np.empty(len(rows), dtype=np.int64)
    symbol = np.zeros(2, dtype=np.int64)  # start and end in `text` of the first symbol named
    table, required = _TABLES[kind], kind.required_bits()
    if not _decode(text, ends, bodies, rows, table, required, integers, decimals, present, symbol, DATA_KEY, POWERS):
        return None
    return FlatMessages(integers, decimals, present, text[symbol[0] : symbol[1]].tobytes())


_TABLES = {TICKER: TICKER.table(), TRADE: TRADE.table()}


@nb.njit(cache=True, nogil=True)
def _decode(text, ends, bodies, rows, table, required, integers, decimals, present, symbol, data_key, powers):
    """Fill the outputs message by message; whether every one was read."""
    args = borrowed((text, ends, bodies, rows, table, integers, decimals, present, symbol, data_key, powers))
    text, ends, bodies, rows, table, integers, decimals, present, symbol, data_key, powers = args
    for r in range(rows.shape[0]):
        line = rows[r]
        end = message_end(text, ends, line)
        seen = _message(text, bodies[line], end, table, integers, decimals, r, symbol, data_key, powers)
        if seen < 0 or seen & required != required:
            return False
        present[r] = seen
    return True


@nb.njit(cache=True, nogil=True)
def _message(text, p, end, table, integers, decimals, r, symbol, data_key, powers):
    """Read the message from p to end into column r of the outputs; the bits of the fields it
    carries, or -1."""
    p = data_start(text, p, end, data_key)
    if p < 0:
        return -1
    seen = 0
    while True:
        key = p + 1
        p = key_end(text, p, end)
        if p < 0:
            return -1
        what, row, bit = _SKIP, 0, 0
        if p - 2 - key == 1:
            what, row, bit = table[text[key], 0], table[text[key], 1], table[text[key], 2]
        elif is_pu(text, key, p - 2 - key):
            what = _DECLINE
        if what == _DECLINE or seen & bit:
            return -1
        seen |= bit
        if what == _INTEGER:
            p, value = integer(text, p, end)
            integers[row, r] = value
        elif what == _DECIMAL:
            p, number = decimal(text, p, end, powers)
            decimals[row, r] = number
        elif what == _BOOLEAN:
            p, value = boolean(text, p, end)
            integers[row, r] = value
        elif what == _SYMBOL:
            start = p + 1
            p = string_end(text, p, end)
            if p >= 0 and not same_symbol(text, start, p - 1, symbol):
                return -1
        else:
            p = simple_value_end(text, p, end)
        p, closed = value_end(text, p, end)
        if p < 0:
            return -1
        if closed:
            break
    return seen if data_end(text, p, end) else -1

"""Exact duplicate rows of a batch: a 64-bit hash per row and whether it equals the row before.

Both come from one numba pass per column over the column's 64-bit view (the polars expression
`all_horizontal(eq_missing(shift))` plus a numpy row hash took ~6 passes per column). Values
polars takes as equal get equal keys: nulls alike, NaN alike, -0.0 as 0.0. The hash only names
candidates (rows whose hash repeats in the batch, `repeated_rows`); those are compared exactly
with polars. Delta rows, whose duplicates can only lie in one message, need no hash:
`message_repeats` compares the levels of a message's rows in one pass.
"""

from __future__ import annotations

import numpy as np
import polars as pl
from numba import njit

from market_pipeline.core.lake.batches import column_chunks
from market_pipeline.core.reused_arrays import ReusedArrays

_EXPONENT = np.uint64(0x7FF0_0000_0000_0000)
_MANTISSA = np.uint64(0x000F_FFFF_FFFF_FFFF)
_NAN = np.uint64(0x7FF8_0000_0000_0000)
_NEGATIVE_ZERO = np.uint64(0x8000_0000_0000_0000)
_NULL = np.uint64(0)  # a null's key; its null flag tells it from a 0
_HASH_MULTIPLIER = np.uint64(0x9E3779B97F4A7C15)
_HASH_SHIFT = np.uint64(32)
_SIDE_SHIFT = np.uint64(62)  # a delta row's side (or null) in a level key's top two bits
_NO_NULLS = np.zeros(0, dtype=np.bool_)
# A message of at most this many rows compares its rows' level keys pair by pair; a longer one sorts them.
_PAIRWISE_ROWS = 16
# Types whose every value has its own 64 bits (as Int64, UInt64 or Float64).
_SIXTY_FOUR_BITS = frozenset(
    {
        pl.Boolean,
        pl.Int8,
        pl.Int16,
        pl.Int32,
        pl.Int64,
        pl.UInt8,
        pl.UInt16,
        pl.UInt32,
        pl.UInt64,
        pl.Float32,
        pl.Float64,
    }
)


def _column_bits(column: pl.Series) -> tuple[np.ndarray, np.ndarray, bool, bool]:
    """(up to 64 bits per value, null flags (empty without nulls), float bits?, exact?).

    Exact: equal bits (after the float rule) mean equal values. Other types (text) give their
    polars hash, not exact: the caller compares their neighbours with polars.
    """
    null_count = column.null_count()
    if null_count and null_count == len(column):  # a spot capture's prev_update_id: one key for all
        return np.zeros(len(column), dtype=np.uint64), np.ones(len(column), dtype=np.bool_), False, True
    nulls = column.is_null().to_numpy() if null_count else _NO_NULLS
    if column.dtype not in _SIXTY_FOUR_BITS:
        return column.hash(seed=0).to_numpy(), nulls, False, False
    values = column.fill_null(0) if len(nulls) else column  # a null's value is not looked at
    if values.dtype.is_float():
        wide = values if values.dtype == pl.Float64 else values.cast(pl.Float64)
        return wide.to_numpy().view(np.uint64), nulls, True, True
    if values.dtype == pl.UInt64:
        return values.to_numpy(), nulls, False, True
    if values.dtype == pl.Boolean:
        return values.cast(pl.UInt8).to_numpy(), nulls, False, True  # a byte, not 8, per value
    wide = values if values.dtype == pl.Int64 else values.cast(pl.Int64)
    return wide.to_numpy().view(np.uint64), nulls, False, True


@njit(cache=True, nogil=True, inline="always")
def _key(value, null, is_float):
    if null:
        return _NULL
    if is_float:
        if (value & _EXPONENT) == _EXPONENT and (value & _MANTISSA) != 0:
            return _NAN  # every NaN payload and sign alike
        if value == _NEGATIVE_ZERO:
            return np.uint64(0)
    return value


@njit(cache=True, nogil=True)
def _mix_column(bits, nulls, is_float, hashes, same, start, key_before, null_before):
    """Mix one chunk of a column into `hashes[start:]` and clear `same` where a value differs
    from the one before (`key_before`, `null_before`: the previous chunk's last). Returns the
    chunk's last (key, null) for the next chunk."""
    has_nulls = nulls.shape[0] > 0
    for i in range(bits.shape[0]):
        null = has_nulls and nulls[i]
        key = _key(bits[i], null, is_float)
        j = start + i
        same[j] &= (key == key_before) & (null == null_before)  # no branch: neighbours differ at random
        h = (hashes[j] ^ key) * _HASH_MULTIPLIER  # wraps around, as a hash should
        hashes[j] = h ^ (h >> _HASH_SHIFT)
        key_before, null_before = key, null
    return key_before, null_before


def row_marks(
    frame: pl.DataFrame, lead: pl.DataFrame | None = None, keys: list[str] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(hash, equals the row before) per row of `lead` (one row, the previous batch's last) then
    `frame`; "equal" is polars' `eq_missing` in every column. The first row equals nothing.

    With `keys`, the hash is of those columns only (those that tell the rows apart,
    `duplicate_rows.identity_columns`: `repeated_rows` compares the rows whose hash repeats in
    every column anyway), and a row equal to the row before in them is then compared with it in
    every column.
    """
    if keys is None:
        return _row_marks(frame, lead)
    hashes, same = _row_marks(frame.select(keys), None if lead is None else lead.select(keys))
    candidates = np.flatnonzero(same)
    if len(candidates):
        both = frame if lead is None else pl.concat([lead.select(frame.columns), frame])
        same[candidates] = _equal_to_row_before(both, candidates)
    return hashes, same


def _equal_to_row_before(frame: pl.DataFrame, rows: np.ndarray) -> np.ndarray:
    """Whether each of `rows` (none the first) equals the row before it in every column (`eq_missing`)."""
    current, previous = frame[rows], frame[rows - 1]
    equal = np.ones(len(rows), dtype=np.bool_)
    for name in frame.columns:
        equal &= current[name].eq_missing(previous[name]).to_numpy()
    return equal


def _row_marks(frame: pl.DataFrame, lead: pl.DataFrame | None) -> tuple[np.ndarray, np.ndarray]:
    n = frame.height + (0 if lead is None else lead.height)
    hashes = np.zeros(n, dtype=np.uint64)
    same = np.ones(n, dtype=np.bool_)
    inexact = []
    for column in frame.iter_columns():
        # Chunk by chunk: a batch glued from two (ingest.message_aligned) would be copied whole.
        chunks = column.get_chunks() if lead is None else [lead[column.name], *column.get_chunks()]
        start, key, null = 0, _NULL, False
        for chunk in chunks:
            bits, nulls, is_float, exact = _column_bits(chunk)
            last_key, null = _mix_column(bits, nulls, is_float, hashes, same, start, key, null)
            key = np.uint64(last_key)  # numba hands back a Python int
            start += len(chunk)
        if not exact:
            inexact.append(column.name)
    if inexact:
        both = frame if lead is None else pl.concat([lead.select(frame.columns), frame])
        equal = pl.all_horizontal([pl.col(c).eq_missing(pl.col(c).shift(1)) for c in inexact]).fill_null(False)
        same &= both.select(equal).to_series().to_numpy()
    same[:1] = False
    return hashes, same


def repeated_rows(frame: pl.DataFrame, hashes: np.ndarray) -> np.ndarray:
    """True for each row identical to an earlier row of `frame` (`hashes` from `row_marks`): rows
    whose hash occurs twice are the only candidates, and only those are compared exactly."""
    ordered = np.sort(hashes)
    twice = ordered[1:][ordered[1:] == ordered[:-1]]
    repeated = np.zeros(frame.height, dtype=bool)
    if len(twice):
        candidates = np.flatnonzero(np.isin(hashes, twice))
        first = frame[candidates].select(pl.struct(frame.columns).is_first_distinct()).to_series().to_numpy()
        repeated[candidates] = ~first
    return repeated


@njit(cache=True, nogil=True)
def _level_keys(side, side_nulls, price, price_nulls, price_is_float, keys):
    """Each row's level as one 64-bit key, into `keys`: its price's key with its side (or null) in
    the top bits. Rows of one level get one key; rows of two levels seldom do, and are then told
    apart by the exact comparison. An empty `side` or `price` is an absent column. (Made in a pass
    of its own: made again for each pair compared, the candidates' pass took 4x as long.)"""
    if price.shape[0]:
        has_nulls = price_nulls.shape[0] > 0
        for i in range(keys.shape[0]):
            keys[i] = _key(price[i], has_nulls and price_nulls[i], price_is_float)
    if side.shape[0]:
        has_nulls = side_nulls.shape[0] > 0
        for i in range(keys.shape[0]):
            code = np.uint64(0) if has_nulls and side_nulls[i] else np.uint64(1 + side[i])
            keys[i] ^= code << _SIDE_SHIFT


@njit(cache=True, nogil=True)
def _sorted_repeats(keys, start, end, repeat, message_of):
    """Flag the rows of `keys[start:end]` (a long message) whose key another of them has."""
    order = np.argsort(keys[start:end]) + start
    for k in range(1, end - start):
        if keys[order[k]] == keys[order[k - 1]]:
            repeat[order[k]] = repeat[order[k - 1]] = True
            message_of[order[k]] = message_of[order[k - 1]] = start


@njit(cache=True, nogil=True)
def _level_candidates(
    received, sequence, keys, offset, start, message_received, message_sequence, adjacent, repeat, message_of
):
    """Flag, for the rows of one chunk (rows `offset`... of `keys`, `adjacent` and `repeat`), whether
    the row before is of its message (a run of rows sharing received and sequence) and of its level
    key (`adjacent`), and whether another row of its message is (`repeat`); a flagged row's
    `message_of` is its message's first row. Each row is compared with the `_PAIRWISE_ROWS` rows
    before it in its message; a longer message's keys are sorted when it ends. `start`,
    `message_received`, `message_sequence`: the message open when the chunk starts (the first
    row's, for the first chunk); returned for the next chunk."""
    for k in range(received.shape[0]):
        i = offset + k
        if received[k] != message_received or sequence[k] != message_sequence:
            if i - start > _PAIRWISE_ROWS:
                _sorted_repeats(keys, start, i, repeat, message_of)
            start, message_received, message_sequence = i, received[k], sequence[k]
        for j in range(max(start, i - _PAIRWISE_ROWS), i):
            if keys[j] == keys[i]:
                repeat[i] = repeat[j] = True
                message_of[i] = message_of[j] = start
                adjacent[i] |= j == i - 1
    return start, message_received, message_sequence


def message_repeats(
    frame: pl.DataFrame, side: str = "side_is_bid", price: str = "price", arrays: ReusedArrays | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(equal to the row before, equal to an earlier row of its message) per row of a batch of
    delta rows, "equal" being polars' `eq_missing` in every column.

    Identical rows share received_time and sequence_number, so only rows of one message can be
    equal, and a message updates a level (`side`, `price`) once: the rows of a message sharing a
    level are the only candidates, compared exactly. No row hash is made, and the batch is read
    chunk by chunk without a copy: the bench day's 34 M deltas took 0.8 s of the import's main
    thread, against 2.1 s hashed (by their level) then compared by message. A message that comes
    again later, after another, is a message of its own. Its arrays come from `arrays` (those of
    the caller's thread), else are made afresh."""
    n = frame.height
    arrays = arrays if arrays is not None else ReusedArrays(0)
    keys = arrays.empty(n, np.uint64)
    adjacent, candidate = arrays.zeros(n, np.bool_), arrays.zeros(n, np.bool_)
    message_of = arrays.empty(n, np.int64)  # set for candidates only
    levels = [name for name in (side, price) if name in frame.columns]
    offset = start = 0  # the open message's first row, and its key:
    message_received = message_sequence = None
    for received, sequence, *level in column_chunks(frame, ["received_time", "sequence_number", *levels]):
        chunk = dict(zip(levels, level, strict=True))
        side_bits, side_nulls, _ = _level_bits(chunk.get(side))
        price_bits, price_nulls, price_is_float = _level_bits(chunk.get(price))
        _level_keys(
            side_bits, side_nulls, price_bits, price_nulls, price_is_float, keys[offset : offset + len(received)]
        )
        received, sequence = received.to_numpy(), sequence.to_numpy()
        if message_received is None:
            message_received, message_sequence = received[0], sequence[0]
        start, message_received, message_sequence = _level_candidates(
            received, sequence, keys, offset, start, message_received, message_sequence, adjacent, candidate, message_of
        )
        offset += len(received)
    if n - start > _PAIRWISE_ROWS:
        _sorted_repeats(keys, start, n, candidate, message_of)
    same = arrays.zeros(n, np.bool_)
    rows = np.flatnonzero(adjacent)
    if len(rows):
        same[rows] = _equal_to_row_before(frame, rows)
    repeated = arrays.zeros(n, np.bool_)
    rows = np.flatnonzero(candidate)
    if len(rows):
        keyed = frame[rows].with_columns(pl.Series("_message", message_of[rows]))
        first = keyed.select(pl.struct("_message", *frame.columns).is_first_distinct()).to_series().to_numpy()
        repeated[rows] = ~first
    return same, repeated


def _level_bits(column: pl.Series | None) -> tuple[np.ndarray, np.ndarray, bool]:
    """A level column's 64-bit view, null flags and whether it is a float; empty when absent."""
    if column is None:
        return np.zeros(0, dtype=np.uint64), _NO_NULLS, False
    bits, nulls, is_float, _ = _column_bits(column)
    return bits, nulls, is_float

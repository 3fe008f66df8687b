"""Exact duplicate rows of a batch: a 64-bit hash per row and whether it equals the row before.

Both come from one numba pass per column over the column's 64-bit view (the polars expression
`all_horizontal(eq_missing(shift))` plus a numpy row hash took ~6 passes per column). Values
polars takes as equal get equal keys: nulls alike, NaN alike, -0.0 as 0.0. The hash only names
candidates (rows whose hash repeats in the batch, `repeated_rows`, or in the message,
`repeated_in_messages`); those are compared exactly with polars.
"""

from __future__ import annotations

import numpy as np
import polars as pl
from numba import njit

_EXPONENT = np.uint64(0x7FF0_0000_0000_0000)
_MANTISSA = np.uint64(0x000F_FFFF_FFFF_FFFF)
_NAN = np.uint64(0x7FF8_0000_0000_0000)
_NEGATIVE_ZERO = np.uint64(0x8000_0000_0000_0000)
_NULL = np.uint64(0)  # a null's key; its null flag tells it from a 0
_HASH_MULTIPLIER = np.uint64(0x9E3779B97F4A7C15)
_HASH_SHIFT = np.uint64(32)
_NO_NULLS = np.zeros(0, dtype=np.bool_)
# A message of at most this many rows compares its hashes pair by pair; a longer one sorts them.
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
    `duplicate_rows.identity_columns`: `repeated_rows` and `repeated_in_messages` compare the rows
    whose hash repeats in every column anyway), and a row equal to the row before in them is then
    compared with it in every column.
    """
    if keys is None:
        return _row_marks(frame, lead)
    hashes, same = _row_marks(frame.select(keys), None if lead is None else lead.select(keys))
    candidates = np.flatnonzero(same)
    if len(candidates):
        both = frame if lead is None else pl.concat([lead.select(frame.columns), frame])
        current, previous = both[candidates], both[candidates - 1]
        for name in both.columns:
            same[candidates] &= current[name].eq_missing(previous[name]).to_numpy()
    return hashes, same


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
def _message_candidates(hashes, received, sequence):
    """Whether each row's hash occurs again in its message (a run of rows sharing received_time
    and sequence_number): each row against the rows before it in its message, at most
    `_PAIRWISE_ROWS` back; a longer message's hashes are then sorted."""
    n = hashes.shape[0]
    candidate = np.zeros(n, dtype=np.bool_)
    long_messages = [(0, 0)]  # (start, end); the first entry only types the list
    start = 0
    for i in range(n):
        if received[i] != received[start] or sequence[i] != sequence[start]:
            if i - start > _PAIRWISE_ROWS:
                long_messages.append((start, i))
            start = i
        for j in range(max(start, i - _PAIRWISE_ROWS), i):
            if hashes[j] == hashes[i]:
                candidate[i] = candidate[j] = True
    if n - start > _PAIRWISE_ROWS:
        long_messages.append((start, n))
    for start, end in long_messages[1:]:
        order = np.argsort(hashes[start:end]) + start
        for k in range(1, end - start):
            if hashes[order[k]] == hashes[order[k - 1]]:
                candidate[order[k]] = candidate[order[k - 1]] = True
    return candidate


def repeated_in_messages(frame: pl.DataFrame, hashes: np.ndarray) -> np.ndarray:
    """True for each row identical to an earlier row of its message (`frame`'s rows in runs
    sharing received_time and sequence_number; `hashes` from `row_marks`). Identical rows share
    those two columns, so only rows of one message are compared: 0.2 CPU-s for the bench day's
    34 M delta rows, where sorting each batch's hashes (`repeated_rows`) took 1.9."""
    received = frame["received_time"].to_numpy()
    sequence = frame["sequence_number"].to_numpy()
    candidate = _message_candidates(hashes, received, sequence)
    repeated = np.zeros(frame.height, dtype=bool)
    if candidate.any():
        rows = np.flatnonzero(candidate)
        starts = np.r_[True, (received[1:] != received[:-1]) | (sequence[1:] != sequence[:-1])]
        message = np.cumsum(starts)[rows]
        keyed = frame[rows].with_columns(pl.Series("_message", message))
        first = keyed.select(pl.struct("_message", *frame.columns).is_first_distinct()).to_series().to_numpy()
        repeated[rows] = ~first
    return repeated

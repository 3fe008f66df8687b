"""The day statistics' clock-skew figures, in one numba pass over each batch's times.

Per hour of received_time: rows, messages (rows starting one), skew min/max/negative count and
the skew histogram, plus the day's largest skews. Polars took several group_bys and numpy
several passes for the same. A bucket keeps the SKEW_SIGNIFICANT_BITS leading bits of |skew|,
the bit length taken as a float64's `frexp` gives it, also where |skew| has more bits than a
float64 holds (`test_raw_stats.skew_buckets` is the numpy reference the tests hold it to).

The histogram is dense and lives all day: hour x sign x shift x (|skew| >> shift), where shift is
the bucket's log2 width; it always fits, as |skew| >> shift keeps at most SKEW_SIGNIFICANT_BITS
bits. Untouched pages of it cost nothing (np.zeros maps them lazily).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import polars as pl
from numba import njit

SKEW_SIGNIFICANT_BITS = 10  # of |skew| a histogram bucket keeps
HOURS = 24
SHIFTS = 64 - SKEW_SIGNIFICANT_BITS + 1  # |skew| < 2^64
MANTISSAS = 1 << SKEW_SIGNIFICANT_BITS
NS_PER_HOUR = 3_600_000_000_000
TOP = 10  # largest skews kept over the day (day_stats.SAMPLE_ROWS)
_EARLIEST, _LATEST = np.iinfo(np.int64).min, np.iinfo(np.int64).max  # the first and last hours' open ends


@njit(cache=True, nogil=True, inline="always")
def skew_bucket(skew):
    """The histogram bucket of a skew: (sign, 1 below zero; shift, the bucket's log2 width;
    |skew| >> shift). The bit length as frexp of the float64 gives it."""
    magnitude = abs(skew)
    shift = max(math.frexp(float(magnitude))[1] - SKEW_SIGNIFICANT_BITS, 0)
    return (1 if skew < 0 else 0), shift, magnitude >> shift


@njit(cache=True, nogil=True)
def _skew_pass(
    received,
    origin,
    sequence,
    keyed,
    start,
    first_new,
    rows,
    messages,
    low,
    high,
    negative,
    histogram,
    top,
    top_abs,
    top_times,
    kept,
    base,
):
    """Add a chunk's rows to the per-hour arrays and `histogram`; returns how many rows `top`
    holds after it.

    A row starts a message when (received_time, sequence_number) differs from the row before
    (`first_new` for row 0); unless `keyed`, every row is a message. `top` (|skew| in `top_abs`,
    `kept` rows so far) holds the day rows (`base` + chunk row) of the largest |skew|, the first
    row on a tie, largest first, and `top_times` their received_time, origin_time and
    sequence_number (0 where `sequence`, an absent column, is empty).
    """
    n = received.shape[0]
    has_sequence = sequence.shape[0] > 0
    # The hour of the row before and the received times it covers, as rows stay in one hour for
    # millions of rows: a division per row made the pass 12% slower (5.2-5.3 ns a row against 4.6-4.75).
    hour, hour_start, hour_end = 0, 1, 0
    for i in range(n):
        if received[i] < hour_start or received[i] >= hour_end:
            hour = min(max((received[i] - start) // NS_PER_HOUR, 0), HOURS - 1)
            hour_start = start + hour * NS_PER_HOUR if hour > 0 else _EARLIEST
            hour_end = start + (hour + 1) * NS_PER_HOUR if hour < HOURS - 1 else _LATEST
        rows[hour] += 1
        if not keyed:
            new = True
        elif i == 0:
            new = first_new
        else:
            new = received[i] != received[i - 1] or sequence[i] != sequence[i - 1]
        if not new:
            continue
        skew = received[i] - origin[i]
        messages[hour] += 1
        low[hour] = min(low[hour], skew)
        high[hour] = max(high[hour], skew)
        magnitude = abs(skew)
        if skew < 0:
            negative[hour] += 1
        sign, shift, mantissa = skew_bucket(skew)
        histogram[hour, sign, shift, mantissa] += 1
        if kept < top.shape[0] or magnitude > top_abs[kept - 1]:
            at = min(kept, top.shape[0] - 1)
            while at > 0 and top_abs[at - 1] < magnitude:  # a tie stays behind the earlier row
                top_abs[at], top[at] = top_abs[at - 1], top[at - 1]
                top_times[at, :] = top_times[at - 1, :]
                at -= 1
            top_abs[at], top[at] = magnitude, base + i
            top_times[at, 0], top_times[at, 1] = received[i], origin[i]
            top_times[at, 2] = sequence[i] if has_sequence else 0
            kept = min(kept + 1, top.shape[0])
    return kept


class WorstSkews(NamedTuple):
    """The day's rows of the largest |skew| (message starts), largest first, the first on a tie."""

    rows: np.ndarray  # day row numbers
    received_time: np.ndarray
    origin_time: np.ndarray
    sequence_number: np.ndarray  # 0 where the table has no sequence_number


class SkewPass:
    """The day's per-hour skew figures, histogram and largest skews, batch by batch."""

    def __init__(self, day_start_ns: int):
        self.start = day_start_ns
        self.rows = np.zeros(HOURS, dtype=np.int64)
        self.messages = np.zeros(HOURS, dtype=np.int64)
        self.low = np.full(HOURS, np.iinfo(np.int64).max, dtype=np.int64)
        self.high = np.full(HOURS, np.iinfo(np.int64).min, dtype=np.int64)
        self.negative = np.zeros(HOURS, dtype=np.int64)
        self.histogram = np.zeros((HOURS, 2, SHIFTS, MANTISSAS), dtype=np.int64)
        # Kept over the day in the kernel, with the rows' times: gathering them from each batch
        # and merging in polars took 0.07 s of the bench day's capture deltas (94 batches).
        self._top = np.empty(TOP, dtype=np.int64)
        self._top_abs = np.empty(TOP, dtype=np.int64)
        self._top_times = np.empty((TOP, 3), dtype=np.int64)
        self._kept = 0

    def add(
        self,
        received: list[np.ndarray],
        origin: list[np.ndarray],
        sequence: list[np.ndarray] | None,
        keyed: bool,
        first_new: bool,
        offset: int,
    ) -> None:
        """Adds a batch (its columns as aligned chunks; `sequence` None where the table has no
        sequence_number), whose first row is the day's row `offset`, to the day. Messages are keyed
        by (received_time, sequence_number) when `keyed`, else every row is one."""
        no_sequence = np.zeros(0, dtype=np.int64)
        base = offset
        for k in range(len(received)):
            if k and keyed and sequence is not None:  # does the chunk go on with the message before it?
                first_new = (received[k][0], sequence[k][0]) != (received[k - 1][-1], sequence[k - 1][-1])
            self._kept = _skew_pass(
                received[k],
                origin[k],
                no_sequence if sequence is None else sequence[k],
                keyed and sequence is not None,
                self.start,
                first_new,
                self.rows,
                self.messages,
                self.low,
                self.high,
                self.negative,
                self.histogram,
                self._top,
                self._top_abs,
                self._top_times,
                self._kept,
                base,
            )
            base += len(received[k])

    def worst(self) -> WorstSkews:
        n = self._kept
        times = self._top_times[:n]
        return WorstSkews(self._top[:n].copy(), times[:, 0].copy(), times[:, 1].copy(), times[:, 2].copy())

    def hourly(self, schema: dict[str, pl.DataType]) -> pl.DataFrame:
        """One row per hour with rows; skew min/max null in an hour without a message."""
        hours = np.flatnonzero(self.rows)
        seen = self.messages[hours] > 0
        return pl.DataFrame(
            {
                "hour": hours,
                "rows": self.rows[hours],
                "messages": self.messages[hours],
                "skew_min_ns": pl.Series(self.low[hours]).set(pl.Series(~seen), None),
                "skew_max_ns": pl.Series(self.high[hours]).set(pl.Series(~seen), None),
                "skew_negative": self.negative[hours],
            }
        ).cast(schema)

    def histogram_frame(self, schema: dict[str, pl.DataType]) -> pl.DataFrame:
        """(hour, signed bucket start, width, count), by hour and bucket."""
        cells = np.flatnonzero(self.histogram)
        hour, sign, shift, mantissa = np.unravel_index(cells, self.histogram.shape)
        lower = mantissa.astype(np.int64) << shift
        return (
            pl.DataFrame(
                {
                    "hour": hour,
                    "bucket_ns": np.where(sign == 1, -lower, lower),
                    "width_ns": np.left_shift(np.int64(1), shift.astype(np.int64)),
                    "count": self.histogram.ravel()[cells],
                }
            )
            .cast(schema)
            .sort("hour", "bucket_ns")
        )

"""The day statistics' clock-skew figures of a batch in one numba pass over its times.

Per hour of received_time: rows, messages (rows starting one), skew min/max/negative count and
the skew histogram, plus the batch's largest skews. Polars took several group_bys and numpy
several passes for the same. A bucket keeps the SKEW_SIGNIFICANT_BITS leading bits of |skew|,
the bit length taken as a float64's `frexp` gives it, also where |skew| has more bits than a
float64 holds (`test_raw_stats.skew_buckets` is the numpy reference the tests hold it to).

The histogram is dense and lives all day: hour x sign x shift x (|skew| >> shift), where shift is
the bucket's log2 width; it always fits, as |skew| >> shift keeps at most SKEW_SIGNIFICANT_BITS
bits. Untouched pages of it cost nothing (np.zeros maps them lazily).
"""

from __future__ import annotations

import math

import numpy as np
import polars as pl
from numba import njit

SKEW_SIGNIFICANT_BITS = 10  # of |skew| a histogram bucket keeps
HOURS = 24
SHIFTS = 64 - SKEW_SIGNIFICANT_BITS + 1  # |skew| < 2^64
MANTISSAS = 1 << SKEW_SIGNIFICANT_BITS
NS_PER_HOUR = 3_600_000_000_000
TOP = 10  # largest skews kept per batch (day_stats.SAMPLE_ROWS)


@njit(cache=True, nogil=True)
def _skew_pass(
    received,
    origin,
    sequence,
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
    kept,
    base,
):
    """Add a chunk's rows to the per-hour arrays and `histogram`; returns how many rows `top`
    holds after it.

    A row starts a message when (received_time, sequence_number) differs from the row before
    (`first_new` for row 0); without `sequence` every row is a message. `top` (|skew| in
    `top_abs`, `kept` rows so far) holds the batch rows (`base` + chunk row) of the largest
    |skew|, the first row on a tie, largest first.
    """
    n = received.shape[0]
    keyed = sequence.shape[0] > 0
    for i in range(n):
        hour = min(max((received[i] - start) // NS_PER_HOUR, 0), HOURS - 1)
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
        # The bucket rule: the bit length as frexp of the float64 gives it.
        shift = max(math.frexp(float(magnitude))[1] - SKEW_SIGNIFICANT_BITS, 0)
        histogram[hour, 1 if skew < 0 else 0, shift, magnitude >> shift] += 1
        if kept < top.shape[0] or magnitude > top_abs[kept - 1]:
            at = min(kept, top.shape[0] - 1)
            while at > 0 and top_abs[at - 1] < magnitude:  # a tie stays behind the earlier row
                top_abs[at], top[at] = top_abs[at - 1], top[at - 1]
                at -= 1
            top_abs[at], top[at] = magnitude, base + i
            kept = min(kept + 1, top.shape[0])
    return kept


class SkewPass:
    """The day's per-hour skew figures and histogram, batch by batch."""

    def __init__(self, day_start_ns: int):
        self.start = day_start_ns
        self.rows = np.zeros(HOURS, dtype=np.int64)
        self.messages = np.zeros(HOURS, dtype=np.int64)
        self.low = np.full(HOURS, np.iinfo(np.int64).max, dtype=np.int64)
        self.high = np.full(HOURS, np.iinfo(np.int64).min, dtype=np.int64)
        self.negative = np.zeros(HOURS, dtype=np.int64)
        self.histogram = np.zeros((HOURS, 2, SHIFTS, MANTISSAS), dtype=np.int64)

    def add(
        self, received: list[np.ndarray], origin: list[np.ndarray], sequence: list[np.ndarray] | None, first_new: bool
    ) -> np.ndarray:
        """Adds a batch (its columns as aligned chunks) to the day; returns its rows of the largest
        |skew|, largest first."""
        top, top_abs = np.empty(TOP, dtype=np.int64), np.empty(TOP, dtype=np.int64)
        no_sequence = np.zeros(0, dtype=np.int64)
        kept = base = 0
        for k in range(len(received)):
            if k and sequence is not None:  # does the chunk go on with the message before it?
                first_new = (received[k][0], sequence[k][0]) != (received[k - 1][-1], sequence[k - 1][-1])
            kept = _skew_pass(
                received[k],
                origin[k],
                no_sequence if sequence is None else sequence[k],
                self.start,
                first_new,
                self.rows,
                self.messages,
                self.low,
                self.high,
                self.negative,
                self.histogram,
                top,
                top_abs,
                kept,
                base,
            )
            base += len(received[k])
        return top[:kept]

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

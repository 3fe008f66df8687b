"""Clock skew (received_time - origin_time) of a day's messages: exact quantiles per hour and over
the day, in one bounded pass over three columns of the deltas, for the raw check `clock_skew` and
`validation_reports` alike.

The day statistics' skew histogram (`day_stats`: message counts per hour and bucket of skew in
ns) says which bucket holds each order statistic a quantile needs and at which offset; the pass
keeps only the skews that fall in those few buckets (`SkewQuantiles`). Minimum, maximum, counts
and the negative share come from the statistics, exactly.

The quantiles are stored beside the statistics (`day_stats.SKEW_QUANTILES_FILE`) by the first of
the two measures that needs them, so the day's times are read once, not once per measure. They
are tagged with the rows and bytes of the deltas file (`lake/derived.py`) and a digest of the
statistics' summary, which a new import of changed rows rewrites (its times, skews and counts).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
from numba import njit

from market_pipeline.core.day_clock import HOURS, NS_PER_HOUR, NS_PER_MS, day_start_ns, iso
from market_pipeline.core.lake.derived import read_derived, write_derived
from market_pipeline.core.lake.paths import stats_partition_dir
from market_pipeline.core.quality.day_stats import SKEW, SKEW_QUANTILES_FILE, DayStats
from market_pipeline.core.quality.lake_day import WORST_ROWS, DayFiles, measured_frames
from market_pipeline.core.quality.skew_pass import MANTISSAS, SHIFTS, skew_bucket
from market_pipeline.core.read_ahead import read_ahead
from market_pipeline.core.telemetry.memory import release_free_memory

SKEW_QUANTILES = (0.01, 0.50, 0.99)
DAY_GROUP = HOURS  # group index of the whole day beside hours 0-23 in SkewQuantiles
SKEW_COLUMNS = ("skew_p1_ms", "skew_p50_ms", "skew_p99_ms", "skew_max_ms", "skew_min_ms", "skew_negative_share")
TIME_COLUMNS = ["received_time", "origin_time", "sequence_number"]


def linear_quantile(lower: float, upper: float, q: float, n: int) -> float:
    """polars' `quantile(q, "linear")` from the order statistics at floor and ceil of q (n - 1)."""
    index = q * (n - 1)
    return lower + (upper - lower) * (index - math.floor(index))


def quantile_ranks(q: float, n: int) -> tuple[int, int]:
    index = q * (n - 1)
    return math.floor(index), math.ceil(index)


def skew_ms(received: np.ndarray, origin: np.ndarray) -> np.ndarray:
    """(received - origin) in ms as polars computes `(received - origin) / 1e6` over a column: the
    same floats (polars divides a column by the literal through its reciprocal)."""
    return (np.asarray(received, np.int64) - np.asarray(origin, np.int64)).astype(np.float64) * (1.0 / NS_PER_MS)


def _ms(skew_ns: int | None) -> float | None:
    return None if skew_ns is None else float(skew_ms(np.array([skew_ns], np.int64), np.zeros(1, np.int64))[0])


class SkewQuantiles:
    """Exact linear quantiles of the messages' clock skew in each hour 0-23 and over the day
    (group DAY_GROUP), from the histogram and one pass (`collect`) over the messages' times.

    Values are ns here and become ms through `skew_ms`, which preserves their order, so the order
    statistics and the interpolation are those of polars' `quantile(q, "linear")` over ms.
    """

    def __init__(self, histogram: pl.DataFrame, quantiles: tuple[float, ...], day: dt.date) -> None:
        self.quantiles = quantiles
        self._day_start = day_start_ns(day)
        self.sizes = np.zeros(DAY_GROUP + 1, np.int64)
        # (group, bucket_ns) -> [(rank, offset of the rank within the bucket)]
        self._targets: dict[tuple[int, int], list[tuple[int, int]]] = {}
        self._bucket_counts: dict[tuple[int, int], int] = {}
        per_hour = histogram.select("hour", "bucket_ns", "width_ns", "count")
        whole_day = (
            per_hour.group_by("bucket_ns", "width_ns")
            .agg(pl.col("count").sum())
            .with_columns(pl.lit(DAY_GROUP, pl.Int32).alias("hour"))
        )
        # The target buckets, as the histogram's kernel indexes them (`skew_pass.skew_bucket`).
        self._wanted = np.zeros((2, SHIFTS, MANTISSAS), np.bool_)
        buckets = pl.concat([per_hour.cast({"hour": pl.Int32}), whole_day.select(per_hour.columns)]).sort(
            "hour", "bucket_ns"
        )
        for (group,), part in buckets.group_by("hour", maintain_order=True):
            # Buckets in ascending bucket_ns are in ascending skew order (negative ones too).
            keys, widths = part["bucket_ns"].to_numpy(), part["width_ns"].to_numpy()
            counts = part["count"].to_numpy()
            ends = np.cumsum(counts)
            n = int(ends[-1]) if len(ends) else 0
            self.sizes[int(group)] = n
            for rank in {r for q in quantiles for r in quantile_ranks(q, n)} if n else ():
                at = int(np.searchsorted(ends, rank, side="right"))
                start = int(ends[at - 1]) if at else 0
                key, width = int(keys[at]), int(widths[at])
                self._targets.setdefault((int(group), key), []).append((rank, rank - start))
                self._bucket_counts[(int(group), key)] = int(counts[at])
                shift = width.bit_length() - 1
                self._wanted[int(key < 0), shift, abs(key) >> shift] = True
        self._found: list[pl.DataFrame] = []

    def collect(self, received: np.ndarray, origin: np.ndarray, starts: np.ndarray) -> None:
        """The pass: the receive and origin times of rows, `starts` marking the rows that start a
        message (only those count), in any batches."""
        if not self._targets or not len(received):
            return
        rows, buckets = _rows_in_buckets(received, origin, starts, self._wanted)
        if len(rows):
            self._found.append(
                pl.DataFrame(
                    {
                        "hour": np.clip((received[rows] - self._day_start) // NS_PER_HOUR, 0, HOURS - 1),
                        "bucket_ns": buckets,
                        "skew_ns": (received[rows] - origin[rows]).astype(np.int64),
                    }
                )
            )

    def result(self, source: Path) -> dict[int, list[float | None]]:
        """group -> the quantiles in ms, None for an empty group; `source` names the deltas in errors."""
        found = pl.concat(self._found) if self._found else pl.DataFrame(schema=_FOUND_SCHEMA)
        stats: dict[tuple[int, int], float] = {}
        for (group, key), ranks in self._targets.items():
            in_bucket = pl.col("bucket_ns") == key
            scope = in_bucket if group == DAY_GROUP else in_bucket & (pl.col("hour") == group)
            values = found.filter(scope)["skew_ns"].sort().to_numpy()
            if len(values) != self._bucket_counts[(group, key)]:
                raise ValueError(
                    f"{source}: {len(values)} message skews in [{key} ns ...] of hour {group}, where the day "
                    f"statistics count {self._bucket_counts[(group, key)]}; re-import the day"
                )
            ms = skew_ms(values, np.zeros(len(values), np.int64))
            for rank, offset in ranks:
                stats[(group, rank)] = float(ms[offset])
        out: dict[int, list[float | None]] = {}
        for group in range(DAY_GROUP + 1):
            n = int(self.sizes[group])
            out[group] = [
                linear_quantile(stats[(group, quantile_ranks(q, n)[0])], stats[(group, quantile_ranks(q, n)[1])], q, n)
                if n
                else None
                for q in self.quantiles
            ]
        return out


_FOUND_SCHEMA = {"hour": pl.Int64, "bucket_ns": pl.Int64, "skew_ns": pl.Int64}


@njit(cache=True, nogil=True)
def _rows_in_buckets(received, origin, starts, wanted):
    """(positions, signed bucket starts) of the message-starting rows whose skew (received - origin)
    falls in a bucket `wanted` marks: one loop, no temporaries of batch size. The bucket is found
    by the histogram's own rule, so a row is looked for where the histogram counted it (0.14 s over
    the bench day's 34 M rows, against 0.17 s for a binary search over the buckets' skew ranges)."""
    found = np.empty(received.shape[0], np.int64)
    buckets = np.empty(received.shape[0], np.int64)
    n = 0
    for i in range(received.shape[0]):
        if starts[i]:
            sign, shift, mantissa = skew_bucket(received[i] - origin[i])
            if wanted[sign, shift, mantissa]:
                found[n] = i
                buckets[n] = -(mantissa << shift) if sign else mantissa << shift
                n += 1
    return found[:n], buckets[:n]


def message_starts(path: Path) -> Iterator[tuple[pl.DataFrame, np.ndarray]]:
    """(batch of TIME_COLUMNS, mask of the rows that start a message) over the raw deltas in file
    order. A message is a run of rows sharing (received_time, sequence_number)."""
    previous: tuple[int, int] | None = None
    for frame in measured_frames(path, TIME_COLUMNS):
        if frame.is_empty():
            continue
        recv, seq = frame["received_time"].to_numpy(), frame["sequence_number"].to_numpy()
        starts = np.empty(len(recv), bool)
        starts[1:] = (seq[1:] != seq[:-1]) | (recv[1:] != recv[:-1])
        starts[0] = previous is None or previous != (int(seq[0]), int(recv[0]))
        previous = (int(seq[-1]), int(recv[-1]))
        yield frame, starts


@dataclass(frozen=True)
class SkewFigures:
    """The day's clock skew: SKEW_COLUMNS over the day, per hour (with `messages`), the worst."""

    day: dict[str, float | None]
    hourly: pl.DataFrame  # hour (Int32, 0-23), SKEW_COLUMNS, messages
    worst: list[dict[str, object]]  # the messages with the largest |skew|


def skew_figures(files: DayFiles, stats: DayStats) -> SkewFigures:
    """The day's skew figures from its statistics (`stats` of the deltas) and the exact quantiles
    (`day_quantiles`)."""
    found = day_quantiles(files, stats)
    by_hour = {r["hour"]: r for r in stats.hourly.iter_rows(named=True)}

    def figures(group: int, messages: int, low_ns, high_ns, negative) -> dict[str, float | None]:
        p1, p50, p99 = found[group]
        return {
            "skew_p1_ms": p1,
            "skew_p50_ms": p50,
            "skew_p99_ms": p99,
            "skew_max_ms": _ms(high_ns) if messages else None,
            "skew_min_ms": _ms(low_ns) if messages else None,
            "skew_negative_share": float(negative) / messages if messages else None,
        }

    rows = []
    for hour in range(HOURS):
        r = by_hour.get(hour) or {}
        n = int(r.get("messages") or 0)
        rows.append(
            {
                "hour": hour,
                **figures(hour, n, r.get("skew_min_ns"), r.get("skew_max_ns"), r.get("skew_negative")),
                "messages": n,
            }
        )
    hourly = pl.DataFrame(
        rows, schema={"hour": pl.Int32, **dict.fromkeys(SKEW_COLUMNS, pl.Float64), "messages": pl.Int64}
    )
    s = stats.summary
    total = int(hourly["messages"].sum())
    day = figures(DAY_GROUP, total, s["skew_min_ns"], s["skew_max_ns"], s["skew_negative"])
    return SkewFigures(day, hourly, worst_skews(stats))


_STORED_TAG = b"deltas"  # the stored quantiles name the deltas file they were made from
_STORED_SCHEMA = pa.schema([("group", pa.int32()), ("q", pa.float64()), ("skew_ms", pa.float64())])


def day_quantiles(files: DayFiles, stats: DayStats) -> dict[int, list[float | None]]:
    """SKEW_QUANTILES in ms of each hour and of the day (group DAY_GROUP), None for an empty group:
    the ones stored beside the statistics while the deltas are unchanged, else one pass over the
    deltas' times (which stores them)."""
    deltas = files.require(files.deltas)
    stored_path, tag = None, _summary_tag(stats)
    if files.lake is not None:
        ex, sym = files.instrument.exchange, files.instrument.symbol
        stored_path = stats_partition_dir(files.lake, "book_delta_v2", ex, sym, files.day) / SKEW_QUANTILES_FILE
        stored = read_derived(stored_path, deltas, _STORED_TAG, tag)
        if stored is not None and sorted(set(stored["q"].to_pylist())) == sorted(SKEW_QUANTILES):
            values = {(g, q): v for g, q, v in zip(*(stored[c].to_pylist() for c in _STORED_SCHEMA.names), strict=True)}
            return {g: [values.get((g, q)) for q in SKEW_QUANTILES] for g in range(DAY_GROUP + 1)}
    quantiles = SkewQuantiles(stats.skew_histogram, SKEW_QUANTILES, files.day)
    # The next batch is read and its message starts marked on a thread meanwhile (the kernel lets
    # go of the GIL): 0.7 s instead of 0.9 s over the bench day's 34 M rows.
    for frame, starts in read_ahead(message_starts(deltas), "skew-read"):
        quantiles.collect(frame["received_time"].to_numpy(), frame["origin_time"].to_numpy(), starts)
    found = quantiles.result(deltas)
    # The allocators keep the pass's decoded batches for reuse (~170 MB on a realistic day), and
    # this runs in the step's own process, between the import and the rebuild: hand them back.
    release_free_memory()
    if stored_path is not None:
        rows = [(g, q, v) for g, values in found.items() for q, v in zip(SKEW_QUANTILES, values, strict=True)]
        table = pa.Table.from_pylist(
            [dict(zip(_STORED_SCHEMA.names, row, strict=True)) for row in rows], schema=_STORED_SCHEMA
        )
        write_derived(table, stored_path, deltas, _STORED_TAG, tag)
    return found


def _summary_tag(stats: DayStats) -> dict[bytes, bytes]:
    digest = hashlib.sha256(json.dumps(stats.summary, sort_keys=True, default=str).encode()).hexdigest()
    return {b"stats_summary_sha256": digest.encode()}


def worst_skews(stats: DayStats) -> list[dict[str, object]]:
    """The messages with the largest |skew| (the day statistics' samples), largest first."""
    worst = stats.samples_of(SKEW).select("received_time", "origin_time", "sequence_number")
    if worst.is_empty():
        return []
    worst = worst.with_columns(
        pl.Series("skew_ms", skew_ms(worst["received_time"].to_numpy(), worst["origin_time"].to_numpy()))
    )
    return [
        {
            "received_time": iso(r["received_time"]),
            "origin_time": iso(r["origin_time"]),
            "sequence_number": r["sequence_number"],
            "skew_ms": r["skew_ms"],
        }
        for r in worst.sort(pl.col("skew_ms").abs(), descending=True).head(WORST_ROWS).iter_rows(named=True)
    ]

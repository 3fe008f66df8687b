"""A read's range: UTC days, and optionally exact instants within them.

A date reads whole days (`end` included); a datetime reads [start, end) on the table's time column
(naive datetimes are UTC). Times in the lake are int64 nanoseconds since the epoch.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from market_pipeline.core.day_clock import EPOCH, to_ns
from market_pipeline.core.read.errors import EmptyRange
from market_pipeline.core.read.partitions import days_between


@dataclass(frozen=True)
class TimeRange:
    first_day: dt.date
    last_day: dt.date
    start_ns: int | None  # None: from the start of first_day
    end_ns: int | None  # exclusive; None: to the end of last_day

    @classmethod
    def of(cls, start: dt.date | dt.datetime, end: dt.date | dt.datetime | None = None) -> TimeRange:
        end = start if end is None else end
        start_ns = to_ns(start) if isinstance(start, dt.datetime) else None
        end_ns = to_ns(end) if isinstance(end, dt.datetime) else None
        first = _utc_day(start_ns) if start_ns is not None else start
        last = _utc_day(end_ns - 1) if end_ns is not None else end
        if last < first or (start_ns is not None and end_ns is not None and end_ns <= start_ns):
            raise EmptyRange(f"the range {start} .. {end} is empty: its end is not after its start")
        return cls(first, last, start_ns, end_ns)

    @property
    def days(self) -> list[dt.date]:
        return days_between(self.first_day, self.last_day)

    @property
    def exact(self) -> bool:
        return self.start_ns is not None or self.end_ns is not None

    def __str__(self) -> str:
        start = self.start_ns if self.start_ns is not None else self.first_day
        end = self.end_ns if self.end_ns is not None else self.last_day
        return f"{start} .. {end}"


def _utc_day(ns: int) -> dt.date:
    return (EPOCH + dt.timedelta(microseconds=ns // 1_000)).date()

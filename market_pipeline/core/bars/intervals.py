"""Bar intervals: `1m`, `5m`, `1h` ... (minutes or hours that divide a UTC day), parsed and validated once."""

from __future__ import annotations

import re
from dataclasses import dataclass

DAY_SECONDS = 86_400
NS_PER_SECOND = 1_000_000_000
UNIT_SECONDS = {"m": 60, "h": 3_600}
_INTERVAL = re.compile(r"([0-9]+)([a-z]+)")


@dataclass(frozen=True, order=True)
class BarInterval:
    """One bar length; `name` is its canonical spelling (whole hours in h, else minutes)."""

    seconds: int
    name: str

    @property
    def ns(self) -> int:
        return self.seconds * NS_PER_SECOND

    @property
    def bars_per_day(self) -> int:
        return DAY_SECONDS // self.seconds


def parse_interval(text: str) -> BarInterval:
    """`1m`, `15m`, `1h`, `4h` ...; ValueError naming the value unless it is minutes or hours dividing a day."""
    spelled = text.strip().lower()
    match = _INTERVAL.fullmatch(spelled)
    if match is None or match.group(2) not in UNIT_SECONDS:
        raise ValueError(f"{text!r} is not a bar interval: a whole number of minutes or hours, e.g. 1m, 5m, 1h")
    seconds = int(match.group(1)) * UNIT_SECONDS[match.group(2)]
    if seconds <= 0 or DAY_SECONDS % seconds:
        raise ValueError(f"{text!r} does not divide a day into whole bars (e.g. 1m, 5m, 15m, 1h, 4h, 24h)")
    name = f"{seconds // 3_600}h" if seconds % 3_600 == 0 else f"{seconds // 60}m"
    return BarInterval(seconds, name)


def parse_intervals(texts: list[str]) -> tuple[BarInterval, ...]:
    """Every interval of `texts`, shortest first; ValueError for none, a bad one or a repeated length."""
    if not texts:
        raise ValueError("at least one bar interval is required, e.g. 1m")
    intervals = [parse_interval(text) for text in texts]
    seen: dict[int, str] = {}
    for text, interval in zip(texts, intervals, strict=True):
        if interval.seconds in seen:
            raise ValueError(f"{text!r} repeats the interval {seen[interval.seconds]!r}")
        seen[interval.seconds] = text
    return tuple(sorted(intervals))

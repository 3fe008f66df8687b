"""What a read of the lake can refuse, each naming what was asked and what exists."""

from __future__ import annotations

import datetime as dt

from market_pipeline.core.errors import InputDataError, UsageError


class UnknownInstrument(UsageError):
    """An instrument with no files in the table read."""


class EmptyRange(InputDataError):
    """No day of the range can be returned: none has a file, or every one was skipped or failed."""


class SkippedDaysWarning(UserWarning):
    """Days of the range left out of a read (no file, skipped, or failed a blocking check), with why."""


def describe_days(reasons: dict[dt.date, str]) -> str:
    return "\n".join(f"- {day}: {reason}" for day, reason in sorted(reasons.items()))

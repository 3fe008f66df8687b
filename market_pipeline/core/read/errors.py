"""What a read of the lake can refuse, each naming what was asked and what exists."""

from __future__ import annotations

import datetime as dt

from market_pipeline.core.errors import ConfigurationError, InputDataError, UsageError


class UnknownInstrument(UsageError):
    """An instrument with no files in the table read."""


class EmptyRange(InputDataError):
    """No day of the range can be returned: none has a file, or every one was skipped or failed."""


class LakeNotFound(ConfigurationError, FileNotFoundError):
    """`open` on a directory that does not exist, or one without a lake (not a pipeline data directory)."""


# How a reader of the lake asks for the days that failed their checks, where a message suggests it:
# the Python argument by default; the CLI passes its flag.
INCLUDE_FAILED_ARGUMENT = "include_failed=True"


class SkippedDaysWarning(UserWarning):
    """Days of the range left out of a read (no file, skipped, or failed a blocking check), with why."""


def describe_days(reasons: dict[dt.date, str]) -> str:
    return "\n".join(f"- {day}: {reason}" for day, reason in sorted(reasons.items()))

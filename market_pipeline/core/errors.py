"""One exception hierarchy for the errors a user can cause, each kind with a stable exit code.

Every error that a setting, a source, an input file, a key or a capture can cause derives from
`PipelineError` through exactly one kind below. The CLI turns a `PipelineError` into one line
(`error: <message>`, naming the setting, file or row, and the fix) and exits with its kind's
`exit_code`; anything else is a bug and gets exit code 70. The codes are a contract with
operators' scripts (docs/operations.md, "Exit codes"): never renumber a kind, only add new ones.

Existing classes keep their historical base as a second base (e.g. `class CaptureFormatError(
CaptureError, ValueError)`), so `except ValueError` in older callers still catches them.
"""

from __future__ import annotations

from typing import ClassVar

EXIT_OK = 0
EXIT_RUN_FAILED = 1  # a run ran and a step failed for a reason that is not a PipelineError
EXIT_USAGE = 2
EXIT_CONFIGURATION = 3
EXIT_SOURCE = 4
EXIT_INPUT_DATA = 5
EXIT_INTEGRITY = 6
EXIT_CRYPTO = 7
EXIT_CAPTURE = 8
EXIT_BLOCKED = 9
EXIT_WARNINGS = 10  # `health`: a check's latest result failed with WARN severity, and nothing worse
EXIT_INTERNAL = 70  # an unexpected exception: a bug (sysexits' EX_SOFTWARE)
EXIT_INTERRUPTED = 130


class PipelineError(Exception):
    """Base of every error a user can cause. Subclass one of the kinds below, never this one."""

    kind: ClassVar[str] = "error"
    exit_code: ClassVar[int] = EXIT_RUN_FAILED
    # Every concrete subclass by class name, so the CLI can find the kind of an error that only
    # survives as a name (a failed step's error in Dagster's event log).
    by_name: ClassVar[dict[str, type[PipelineError]]] = {}

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        PipelineError.by_name.setdefault(cls.__name__, cls)


class UsageError(PipelineError):
    """Bad command-line arguments or environment (dates, selection, DAGSTER_HOME)."""

    kind = "usage"
    exit_code = EXIT_USAGE


class ConfigurationError(PipelineError):
    """An invalid setting (PIPELINE_*, config.yaml, .env) or a directory a setting names."""

    kind = "configuration"
    exit_code = EXIT_CONFIGURATION


class SourceError(PipelineError):
    """The source has no usable data for what was asked (missing day, unreachable store)."""

    kind = "source"
    exit_code = EXIT_SOURCE


class InputDataError(PipelineError):
    """A vendor file or row that cannot be imported as it is (wrong schema, corrupt, bad values)."""

    kind = "input data"
    exit_code = EXIT_INPUT_DATA


class IntegrityError(PipelineError):
    """Data that does not match what was recorded for it (checksums, manifests)."""

    kind = "integrity"
    exit_code = EXIT_INTEGRITY


class CryptoError(PipelineError):
    """A missing or malformed master key, or an encrypted file that does not authenticate."""

    kind = "crypto"
    exit_code = EXIT_CRYPTO


class CaptureError(PipelineError):
    """A Binance capture that cannot be recorded or read."""

    kind = "capture"
    exit_code = EXIT_CAPTURE


class BlockedError(PipelineError):
    """A command gave up waiting for something another run holds (a concurrency-pool slot, a lock)."""

    kind = "blocked"
    exit_code = EXIT_BLOCKED


KINDS: tuple[type[PipelineError], ...] = (
    UsageError,
    ConfigurationError,
    SourceError,
    InputDataError,
    IntegrityError,
    CryptoError,
    CaptureError,
    BlockedError,
)


def kind_of(class_names: list[str]) -> type[PipelineError] | None:
    """The first PipelineError class among `class_names` (an error and its causes), if any."""
    for name in class_names:
        cls = PipelineError.by_name.get(name)
        if cls is not None:
            return cls
    return None

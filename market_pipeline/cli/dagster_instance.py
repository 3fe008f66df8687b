"""The Dagster instance of $DAGSTER_HOME as the CLI opens it (never Dagster's throwaway one), and
Dagster's own console logging as quiet as the command's verbosity asks."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

from market_pipeline.cli.common import EXIT_USAGE, CliError

if TYPE_CHECKING:
    import dagster as dg

_LOG_LEVELS = {0: "WARNING", 1: "INFO"}


def dagster_log_level(verbosity: int) -> str:
    return _LOG_LEVELS.get(verbosity, "DEBUG")


def _not_ungated_check_notice(record: logging.LogRecord) -> bool:
    """Logging filter: False (drop) for Dagster's "blocking check emitted no result" notice."""
    message = record.getMessage()
    return not ("emitted no result" in message and "will proceed without gating" in message)


def quiet_dagster(verbosity: int) -> None:
    """Dagster's own Python logging, unless -v was given (its API-stability warnings: dagster_compat)."""
    logging.getLogger("dagster").setLevel(dagster_log_level(verbosity))
    # Our daily checks report one evaluation per day as events, not as the step's output, so
    # Dagster notes that downstream steps are not gated on an output. They are gated all the
    # same: a failed blocking evaluation fails the check step (quality/check_support.py).
    # The notice comes from a logger of Dagster's internal modules (named after the module), and
    # a logger's filters do not apply to the records of its children, so the filter goes on the
    # handlers that print propagated records: the `dagster` and root loggers' handlers and
    # Python's last-resort stderr handler (the one used when no handler is configured).
    if verbosity < 2:
        handlers = [*logging.getLogger("dagster").handlers, *logging.getLogger().handlers, logging.lastResort]
        for handler in handlers:
            if handler is not None and _not_ungated_check_notice not in handler.filters:
                handler.addFilter(_not_ungated_check_notice)


def require_dagster_home() -> Path:
    """The persistent instance directory; never fall back to Dagster's throwaway instance."""
    value = os.environ.get("DAGSTER_HOME", "").strip()
    if not value:
        raise CliError(
            "DAGSTER_HOME is not set. Without it Dagster would record the run in a temporary "
            "instance that vanishes when this process exits. Set it to the instance directory, "
            "e.g. `export DAGSTER_HOME=$PWD/dagster_home` (the Makefile does this for you).",
            EXIT_USAGE,
        )
    home = Path(value)
    if not home.is_absolute():
        raise CliError(f"DAGSTER_HOME={value} must be an absolute path", EXIT_USAGE)
    if not home.is_dir():
        raise CliError(f"DAGSTER_HOME={value} is not an existing directory", EXIT_USAGE)
    return home


INSTANCE_LOCK = ".market_pipeline-instance.lock"


def open_instance() -> dg.DagsterInstance:
    """The DAGSTER_HOME instance, opened under a lock file in DAGSTER_HOME.

    Opening a new SQLite instance creates its schema (and stamps alembic's version table): two
    first commands on a fresh DAGSTER_HOME once raced there, and one died with `table
    alembic_version already exists`. The lock makes the second wait (it says so) until the
    first has created the schema, then open it as it is.
    """
    import dagster as dg

    from market_pipeline.core.lake.cache_lock import cache_lock

    with cache_lock(require_dagster_home() / INSTANCE_LOCK, "opening the Dagster instance in DAGSTER_HOME"):
        return dg.DagsterInstance.get()

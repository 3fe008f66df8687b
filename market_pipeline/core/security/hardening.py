"""Process-wide protections, applied at each entry point of the pipeline.

Called by the CLI (`market-pipeline ...`) before it does anything, and by the code location
(`market_pipeline.definitions`, through `market_pipeline.defs.common.log_scrubbing.harden_code_location`,
which adds the scrubbing of Dagster's events) when it loads, which covers every Dagster process
that runs pipeline code: the code server, run workers and step workers all load the code location.
Dagster-free, like all of core/.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, SecretStr

from market_pipeline.core.log_limits import limit_repeated_warnings
from market_pipeline.core.security.scrub import SECRET_ENV_VARS, install_log_scrubbing, register_secret

# Files this process creates are owner-only (0600, directories 0700) whoever creates them:
# DuckDB's warehouse.duckdb and its WAL, Dagster-independent third-party writers, lock files.
PRIVATE_UMASK = 0o077


def harden_process(settings: BaseModel | None = None, env_file: Path = Path(".env")) -> None:
    """Set umask 077, scrub secrets from every log record and limit repeated warnings (idempotent).

    The secret variables set in `env_file` (the settings' `.env`, which is not in os.environ) are
    scrubbed too, and with `settings` (the pipeline settings) every `SecretStr` in them, wherever
    it came from.
    """
    os.umask(PRIVATE_UMASK)
    install_log_scrubbing()
    limit_repeated_warnings()
    _register_dotenv_secrets(env_file)
    if settings is not None:
        for value in _secret_values(settings):
            register_secret(value)


def _secret_values(model: BaseModel) -> list[str]:
    """Every SecretStr value in the settings, nested groups included."""
    found: list[str] = []

    def walk(value: Any) -> None:
        if isinstance(value, SecretStr):
            found.append(value.get_secret_value())
        elif isinstance(value, BaseModel):
            for name in type(value).model_fields:
                walk(getattr(value, name))
        elif isinstance(value, dict):
            for item in value.values():
                walk(item)

    walk(model)
    return found


def _register_dotenv_secrets(env_file: Path) -> None:
    """PIPELINE_MASTER_KEY, AWS_SECRET_ACCESS_KEY... may sit in `.env`, which is not in os.environ."""
    if not env_file.is_file():
        return
    from dotenv import dotenv_values

    values = dotenv_values(env_file)
    for name in SECRET_ENV_VARS:
        register_secret(values.get(name))

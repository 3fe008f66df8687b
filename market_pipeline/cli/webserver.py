"""`market-pipeline webserver`: the Dagster UI on the address the settings give (`PIPELINE_UI__*`).

The one way the repository starts the UI (`make ui`, the systemd unit, the Dockerfile), so the
address is a setting like any other, checked like the others: in the prod profile a host beyond
loopback needs a stated reason (`PIPELINE_UI__EXPOSED_REASON`); elsewhere it is a warning.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from market_pipeline.cli.common import EXIT_CONFIGURATION, CliError, eprint
from market_pipeline.cli.insecure_settings import STRICT_PROFILE, ui_exposure_problem
from market_pipeline.settings import PipelineSettings, load_settings


def webserver_argv(settings: PipelineSettings, workspace: Path) -> list[str]:
    """dagster-webserver under this interpreter (the venv's or the image's), on the UI's address."""
    host, port = settings.ui.host, str(settings.ui.port)
    return [sys.executable, "-m", "dagster_webserver", "-h", host, "-p", port, "-w", str(workspace)]


def checked_ui_settings() -> PipelineSettings:
    """The settings, refused in the prod profile (warned about elsewhere) if the UI is exposed without a reason."""
    settings = load_settings()
    problem = ui_exposure_problem(settings)
    if problem and settings.env == STRICT_PROFILE:
        raise CliError(problem, EXIT_CONFIGURATION)
    if problem:
        eprint(f"warning: {problem}")
    return settings


def webserver_command(workspace: Path) -> int:
    settings = checked_ui_settings()
    if not workspace.is_file():
        raise CliError(f"--workspace {workspace}: no such file")
    argv = webserver_argv(settings, workspace)
    print(f"starting the Dagster UI on {settings.ui.host}:{settings.ui.port} (workspace {workspace})", flush=True)
    os.execv(argv[0], argv)  # the webserver replaces this process: signals and exit code are its own

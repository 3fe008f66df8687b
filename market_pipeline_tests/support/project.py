"""Where the project is: the repository, its Dagster instance config, the virtualenv's commands,
the third-party sample data beside the repository, and the environment a subprocess gets."""

from __future__ import annotations

import os
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
PROJECT_DAGSTER_YAML = REPO_ROOT / "dagster_home" / "dagster.yaml"
VENV_BIN = Path(sys.executable).parent
# Third-party captures and samples: read in place, never copied into the repository.
REAL_DATA_DIR = REPO_ROOT.parent / "shared" / "data" / "real"


def subprocess_env(**extra: str) -> dict[str, str]:
    """The current (hermetic) environment plus the source tree on PYTHONPATH."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p)
    env.update(extra)
    return env

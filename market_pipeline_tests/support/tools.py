"""A test that needs a tool the machine lacks: skipped on a developer's machine, failed in CI.

.ci/run (which sets CI=true) installs the Debian packages of these tools, so in CI a missing one
means the install failed: the test that needs it fails and says so, instead of passing unnoticed as
a skip. Third-party data that is absent (../shared/data/real) is not a tool: those tests still skip.
"""

from __future__ import annotations

import os
from typing import NoReturn

import pytest

# The Debian package that provides each tool the tests run.
DEBIAN_PACKAGES = {
    "chromium": "chromium",
    "find": "findutils",
    "initdb": "postgresql",
    "jq": "jq",
    "pg_ctl": "postgresql",
    "postgres": "postgresql",
    "postgresql": "postgresql",
    "prometheus": "prometheus",
    "runuser": "util-linux",
    "sed": "sed",
    "setpriv": "util-linux",
}
CI_INSTALLS = {"chromium", "jq", "postgresql", "prometheus"}  # .ci/run's apt_install lines


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() == "true"


def missing_tool(tool: str, reason: str) -> NoReturn:
    """Skip the test for want of `tool` (why: `reason`), or fail it when CI=true."""
    package = DEBIAN_PACKAGES.get(tool, tool)
    source = "which .ci/run installs" if package in CI_INSTALLS else "part of a standard Debian system"
    message = f"{reason} (`{tool}`: Debian package `{package}`, {source})"
    if in_ci():
        pytest.fail(f"{message}; CI=true, so a missing tool fails the test: see .ci/run's install log", pytrace=False)
    pytest.skip(message)

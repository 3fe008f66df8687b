"""support/tools.py: a test that needs a missing tool skips on a developer's machine and fails in CI."""

from __future__ import annotations

import pytest

from market_pipeline_tests.support.tools import missing_tool


@pytest.mark.parametrize("ci", [None, "false", "1"])
def test_a_missing_tool_skips_outside_ci(monkeypatch, ci):
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", ci)
    with pytest.raises(pytest.skip.Exception) as skipped:
        missing_tool("prometheus", "no prometheus binary")
    assert str(skipped.value) == (
        "no prometheus binary (`prometheus`: Debian package `prometheus`, which .ci/run installs)"
    )


@pytest.mark.parametrize("ci", ["true", "TRUE"])
def test_a_missing_tool_fails_in_ci_naming_its_package(monkeypatch, ci):
    monkeypatch.setenv("CI", ci)
    with pytest.raises(pytest.fail.Exception) as failed:
        missing_tool("initdb", "no PostgreSQL binaries")
    assert str(failed.value).startswith(
        "no PostgreSQL binaries (`initdb`: Debian package `postgresql`, which .ci/run installs); CI=true"
    )
    assert not failed.value.pytrace


def test_a_tool_of_a_standard_system_is_not_said_to_be_installed_by_ci(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match=r"Debian package `findutils`, part of a standard Debian system"):
        missing_tool("find", "the runbook needs find")

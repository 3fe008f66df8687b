"""The test suite's own rules: test modules import shared code from `support` only (never from each
other, never from conftest), and a test that runs a whole graph, dagster-daemon, the webserver or a
browser carries its marker, or collection fails (support/marker_rule.py)."""

from __future__ import annotations

import ast
import textwrap

import pytest

from market_pipeline_tests.support.marker_rule import heavy_markers_in
from market_pipeline_tests.support.project import REPO_ROOT

SUITE = REPO_ROOT / "market_pipeline_tests"


def _imported_modules(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, dotted module) of every import anywhere in a module, `from a import b` as a.b too."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            module = "." * node.level + (node.module or "")
            found.append((node.lineno, module))
            found.extend((node.lineno, f"{module}.{alias.name}".replace("..", ".")) for alias in node.names)
    return found


def test_no_test_module_imports_another_or_conftest_and_support_is_spelled_one_way():
    local = {path.stem for path in SUITE.rglob("*.py")}
    problems = []
    files = sorted(SUITE.rglob("*.py"))
    assert len([f for f in files if f.name.startswith("test_")]) > 60
    for path in files:
        for line, module in _imported_modules(ast.parse(path.read_text(encoding="utf-8"))):
            parts = module.split(".")
            where = f"{path.relative_to(REPO_ROOT)}:{line}: {module}"
            if module.startswith("."):
                problems.append(f"{where} (a relative import: spell it market_pipeline_tests.support...)")
            elif any(part.startswith("test_") or part == "conftest" for part in parts):
                problems.append(f"{where} (a test module or conftest: move what it shares to support/)")
            elif parts[0] == "market_pipeline_tests" and parts[1:2] not in ([], ["support"]):
                problems.append(f"{where} (shared code lives in market_pipeline_tests.support)")
            elif parts[0] in local and parts[0] != "market_pipeline_tests":
                problems.append(f"{where} (spell it from market_pipeline_tests.support.{parts[0]} import ...)")
    assert problems == []


def test_the_rule_reads_what_runs_not_what_is_mentioned():
    source = '''
    def test_x(tmp_path):
        """market-pipeline demo, then dagster-daemon and dagster-webserver (a docstring: not run)."""
        # main(["run", "--start-date", "D", "--end-date", "D"]) in a comment: not run either
        assert parse("run --start-date D") == [["run", "--start-date", "D", "--end-date", "D"]]  # expected values
        main(["run", "--start-date", "D", "--end-date", "D", "--select", "raw_trades"])  # one asset
    '''
    assert heavy_markers_in(source) == {}


@pytest.mark.parametrize(
    ("source", "markers"),
    [
        ('main(["run", "--start-date", day, "--end-date", day])', {"graph"}),
        ('subprocess.run([str(VENV_BIN / "market-pipeline"), "run", "--start-date", a, "--end-date", b])', {"graph"}),
        ('main(["demo", "--days", "1"])', {"graph"}),
        ('bench.main(["--scale", "0.005"])', {"graph"}),
        ('Popen([str(VENV_BIN / "dagster-daemon"), "run", "-w", str(workspace)])', {"daemon"}),
        ("Service('code-server', code_server_argv(port, REPO_ROOT), env, root)", {"daemon"}),
        ('Popen([str(VENV_BIN / "dagster-webserver"), "-p", str(port)])', {"webserver"}),
        ('main(["webserver", "-w", str(workspace)])', {"webserver"}),
        ('Popen([str(VENV_BIN / "market-pipeline"), "ui"])', {"daemon", "webserver"}),
        ('pytest.importorskip("playwright.sync_api")', {"browser"}),
        ("browser = playwright.chromium.launch(executable_path=CHROMIUM)", {"browser"}),
    ],
)
def test_the_rule_names_what_a_test_runs(source, markers):
    assert set(heavy_markers_in(source)) == markers


@pytest.fixture
def suite(pytester: pytest.Pytester) -> pytest.Pytester:
    """A small suite whose conftest applies the rule as the real one does (its own module names)."""
    pytester.makeconftest(
        """
        import pytest
        from market_pipeline_tests.support import marker_rule

        @pytest.hookimpl(tryfirst=True)
        def pytest_collection_modifyitems(items):
            marker_rule.check(items, suite="test_heavy")
            marker_rule.imply_slow(items)
        """
    )
    pytester.makeini(
        "[pytest]\nmarkers =\n    graph: g\n    daemon: d\n    webserver: w\n    browser: b\n    slow: s\n"
        "    nothing_starts: n\n"
    )
    return pytester


def _collect(suite: pytest.Pytester, source: str, *args: str) -> pytest.RunResult:
    suite.makepyfile(test_heavy=textwrap.dedent(source))
    return suite.runpytest_inprocess("--collect-only", "-q", "-p", "no:cacheprovider", *args)


def test_collection_fails_naming_the_test_and_the_marker_it_lacks(suite):
    result = _collect(
        suite,
        """
        import subprocess
        import pytest

        def start_daemon():
            return subprocess.Popen(["dagster-daemon", "run"])

        @pytest.fixture
        def webserver():
            yield subprocess.Popen(["dagster-webserver", "-p", "3000"])

        def test_graph():
            subprocess.run(["market-pipeline", "run", "--start-date", "2024-03-01", "--end-date", "2024-03-01"])

        def test_helper():
            start_daemon()

        def test_fixture(webserver):
            pass

        @pytest.mark.nothing_starts
        def test_exempt_without_a_reason():
            subprocess.run(["market-pipeline", "demo"])
        """,
    )
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    expected = [
        "test_heavy.py::test_graph: needs @pytest.mark.graph (`run --start-date` without --select, in test_heavy.",
        "test_heavy.py::test_helper: needs @pytest.mark.daemon (dagster-daemon, in test_heavy.start_daemon)",
        "test_heavy.py::test_fixture: needs @pytest.mark.webserver (dagster-webserver, in test_heavy.webserver)",
        'test_heavy.py::test_exempt_without_a_reason: @pytest.mark.nothing_starts("...") needs its reason',
    ]
    assert [line for line in expected if line not in result.stderr.str()] == []


def test_marked_tests_collect_and_every_heavy_marker_implies_slow(suite):
    result = _collect(
        suite,
        """
        import subprocess
        import pytest

        @pytest.mark.graph
        def test_graph():
            subprocess.run(["market-pipeline", "demo"])

        @pytest.mark.nothing_starts("the CLI refuses the range")
        def test_refused():
            subprocess.run(["market-pipeline", "run", "--start-date", "2024-03-02", "--end-date", "2024-03-01"])

        def test_light():
            pass
        """,
        "-m",
        "not slow",
    )
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(["test_heavy.py::test_refused", "test_heavy.py::test_light", "2/3 tests collected*"])

"""The markers of the expensive tests, enforced at collection time (conftest.py's hook calls
`check`), and the order pytest-xdist hands the test files out in.

A test that runs a whole graph, starts dagster-daemon or a code server, starts dagster-webserver
or drives Chromium carries the marker that says so: `graph`, `daemon`, `webserver`, `browser`
(registered in pyproject.toml). Each implies `slow`, so `-m "not slow"` (`make test-quick`) leaves
them out. What a test does is read from sources: the test function's, its fixtures' (every fixture
in its closure) and those of the test suite's functions and classes they name, transitively. A
test that calls such a command only to see it refused or stubbed carries
`nothing_starts(reason)` instead.
"""

from __future__ import annotations

import ast
import functools
import inspect
import sys
import textwrap
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import pytest

HEAVY_MARKERS = ("graph", "daemon", "webserver", "browser")
EXEMPT_MARKER = "nothing_starts"
# Heaviest first: a test file ranks by its heaviest test (then files with more such tests first).
COST_ORDER = ("browser", "webserver", "daemon", "graph", "slow")
SUITE_PACKAGE = "market_pipeline_tests"  # whose functions and classes are read (not the pipeline's)


def heavy_markers_in(source: str) -> dict[str, str]:
    """The heavy markers a piece of test-suite source calls for: {marker: what calls for it}.

    Read from the syntax tree, so comments and docstrings never count: an argv list (not nested in
    another list: tables of expected values are) with `run` and `--start-date` but no `--select`
    (every asset), or `demo`, is a whole graph; `ui` (`market-pipeline ui`) is a code server,
    dagster-daemon and the webserver; `webserver` (`market-pipeline webserver`) and the executables
    dagster-daemon and dagster-webserver say themselves; `code_server_argv` starts a code server;
    `bench.main` runs the benchmark, whole graph included; playwright or `chromium.launch` drive
    the browser.
    """
    return _heavy_in(ast.parse(textwrap.dedent(source)))[0]


def _heavy_in(tree: ast.AST) -> tuple[dict[str, str], set[str]]:
    """The heavy markers `tree` calls for, and the names it reads (for `_own`), in one walk."""
    # One walk (every pytest worker runs the check as it collects): ast.walk yields a node before
    # its descendants, so what a node rules out of its children (its docstring; the lists nested in
    # it, tables of values rather than argv) is known before they come.
    skip: set[int] = set()
    found: dict[str, str] = {}
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            names.add(node.id)
        body = getattr(node, "body", None)
        first = body[0] if isinstance(body, list) and body else None
        if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
            skip.add(id(first.value))
        if isinstance(node, ast.List | ast.Tuple | ast.Set):
            skip.update(id(child) for child in node.elts if isinstance(child, ast.List | ast.Tuple))
        if id(node) in skip:
            continue
        if isinstance(node, ast.List | ast.Tuple):
            words = [e.value for e in node.elts if isinstance(e, ast.Constant) and isinstance(e.value, str)]
            if "run" in words and "--start-date" in words[words.index("run") :] and "--select" not in words:
                found.setdefault("graph", "`run --start-date` without --select")
            if "demo" in words:
                found.setdefault("graph", "`demo`")
            if "ui" in words:
                for marker in ("daemon", "webserver"):
                    found.setdefault(marker, "`market-pipeline ui`")
            if "webserver" in words:
                found.setdefault("webserver", "`market-pipeline webserver`")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            if node.value in ("dagster-daemon", "dagster-webserver"):
                found.setdefault(node.value.removeprefix("dagster-"), node.value)
            elif node.value.split(".")[0] == "playwright":
                found.setdefault("browser", f"{node.value!r}")
        elif isinstance(node, ast.Name) and node.id == "code_server_argv":
            found.setdefault("daemon", "a code server (code_server_argv)")
        elif isinstance(node, ast.Name | ast.Attribute) and _name(node) in ("sync_playwright", "async_playwright"):
            found.setdefault("browser", _name(node))
        elif isinstance(node, ast.Attribute) and node.attr == "launch" and _name(node.value) == "chromium":
            found.setdefault("browser", "chromium.launch")
        elif isinstance(node, ast.Attribute) and node.attr == "main" and _name(node.value) == "bench":
            found.setdefault("graph", "bench.main (the benchmark runs the whole graph)")
        elif isinstance(node, ast.Import | ast.ImportFrom):
            modules = [node.module or ""] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
            if any(m.split(".")[0] == "playwright" for m in modules):
                found.setdefault("browser", "import playwright")
    return found, names


def _name(node: ast.AST) -> str | None:
    return node.id if isinstance(node, ast.Name) else node.attr if isinstance(node, ast.Attribute) else None


def _in_suite(obj: object, suite: str) -> bool:
    """Defined in the test suite, and not here (this module's source holds every pattern)."""
    module = getattr(obj, "__module__", None) or ""
    return module.split(".")[0] == suite and module != __name__


@functools.cache
def _definitions(filename: str) -> dict[tuple[str, int], ast.AST]:
    """A test-suite file's functions and classes by (name, line), each file parsed once."""
    tree = ast.parse(Path(filename).read_text(encoding="utf-8"))
    found: dict[tuple[str, int], ast.AST] = {}
    # Statements only, not into expressions: the tests, fixtures and helpers looked up here are
    # defined at a module's or a class's level (a nested one falls back to inspect.getsource).
    todo: list[ast.AST] = [tree]
    while todo:
        node = todo.pop()
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            for line in (node.lineno, *(d.lineno for d in node.decorator_list)):
                found[(node.name, line)] = node
        for name in ("body", "orelse", "finalbody", "handlers"):
            todo.extend(child for child in getattr(node, name, ()) if isinstance(child, ast.stmt | ast.excepthandler))
    return found


def _tree(obj: Callable | type) -> ast.AST | None:
    code = getattr(obj, "__code__", None)
    if code is not None and Path(code.co_filename).is_file():
        tree = _definitions(code.co_filename).get((obj.__name__, code.co_firstlineno))
        if tree is not None:
            return tree
    try:  # a class, or a function the file's definitions do not show by its name and line
        return ast.parse(textwrap.dedent(inspect.getsource(obj)))
    except (OSError, TypeError, SyntaxError):
        return None


@functools.cache
def _own(obj: Callable | type, suite: str) -> tuple[dict[str, str], tuple[Callable | type, ...]]:
    """What a test-suite function or class calls for itself, and the suite's functions and classes
    it names."""
    tree = _tree(obj)
    if tree is None:
        return {}, ()
    namespace = getattr(obj, "__globals__", None) or vars(sys.modules[obj.__module__])
    found, names = _heavy_in(tree)
    named = [namespace.get(name) for name in names]
    ours = tuple(o for o in named if (inspect.isfunction(o) or inspect.isclass(o)) and _in_suite(o, suite))
    return found, ours


@functools.cache
def _found_in(obj: Callable | type, suite: str) -> tuple[tuple[str, str, str], ...]:
    """(marker, what, where) for a test-suite function or class and the suite's functions and
    classes it names, transitively."""
    found: dict[str, tuple[str, str, str]] = {}
    todo, seen = [obj], {id(obj)}
    while todo:
        current = todo.pop(0)
        own, named = _own(current, suite)
        for marker, what in own.items():
            found.setdefault(marker, (marker, what, f"{current.__module__}.{current.__qualname__}"))
        for other in named:
            if id(other) not in seen:
                seen.add(id(other))
                todo.append(other)
    return tuple(found.values())


def _fixture_functions(item: pytest.Item) -> Iterator[Callable]:
    """The functions of every fixture in the item's closure (item.fixturenames) that the suite
    defines. pytest has no public way to look a fixture's definition up by name without running
    it, so this asks the session's fixture manager (`_fixturemanager`, private) what
    `request.getfixturevalue` would use."""
    manager = item.session._fixturemanager
    for name in item.fixturenames:
        defs = manager.getfixturedefs(name, item) or ()
        index = len(defs) - 1
        while index >= 0:  # the one that applies; and the one it overrides when it asks for it
            yield defs[index].func
            if name not in defs[index].argnames:
                break
            index -= 1


def missing_markers(item: pytest.Item, suite: str = SUITE_PACKAGE) -> list[str]:
    """Why the item lacks a heavy marker: one line per missing marker (none: it is fine)."""
    if not isinstance(item, pytest.Function) or item.get_closest_marker(EXEMPT_MARKER):
        return []
    problems = {}
    for obj in (item.function, *_fixture_functions(item)):
        if not _in_suite(obj, suite):
            continue
        for marker, what, where in _found_in(obj, suite):
            if marker not in problems and not item.get_closest_marker(marker):
                problems[marker] = f"{item.nodeid}: needs @pytest.mark.{marker} ({what}, in {where})"
    return list(problems.values())


def check(items: Iterable[pytest.Item], suite: str = SUITE_PACKAGE) -> None:
    """Fail collection naming every test that runs something heavy without its marker, or that
    carries nothing_starts without saying why."""
    problems = []
    for item in items:
        exempt = item.get_closest_marker(EXEMPT_MARKER)
        if exempt is not None and not (exempt.args and isinstance(exempt.args[0], str) and exempt.args[0].strip()):
            problems.append(f'{item.nodeid}: @pytest.mark.{EXEMPT_MARKER}("...") needs its reason')
        problems.extend(missing_markers(item, suite))
    if problems:
        raise pytest.UsageError(
            "tests without the marker of what they run (markers: pyproject.toml; the rule: "
            "market_pipeline_tests/support/marker_rule.py):\n  " + "\n  ".join(problems)
        )


def imply_slow(items: Iterable[pytest.Item]) -> None:
    """Every heavy marker implies `slow`."""
    for item in items:
        if any(item.get_closest_marker(m) for m in HEAVY_MARKERS) and not item.get_closest_marker("slow"):
            item.add_marker(pytest.mark.slow)


def heaviest_files_first(items: list[pytest.Item], suite: str = SUITE_PACKAGE) -> None:
    """Order the items so that the files with the most expensive tests come first, each file's
    tests kept together and in their order (a stable sort on a key per file). Within a rank, a
    file whose session fixtures an earlier file already uses goes last: the first builds them (once
    for all workers, under a lock), and a worker starting the second meanwhile would wait for it."""

    def cost(item: pytest.Item) -> int:
        return next((i for i, m in enumerate(COST_ORDER) if item.get_closest_marker(m)), len(COST_ORDER))

    rank: dict[object, int] = {}
    heavy: dict[object, int] = {}
    shared: dict[object, set[str]] = {}
    for item in items:
        rank[item.path] = min(rank.get(item.path, len(COST_ORDER)), cost(item))
        heavy[item.path] = heavy.get(item.path, 0) + (cost(item) < len(COST_ORDER))
        shared.setdefault(item.path, set()).update(_session_fixtures(item, suite))
    waits: dict[object, bool] = {}
    built: set[str] = set()
    for path in sorted(rank, key=lambda path: (rank[path], -heavy[path])):
        waits[path] = bool(shared[path]) and shared[path] <= built
        built |= shared[path]
    items.sort(key=lambda item: (rank[item.path], waits[item.path], -heavy[item.path]))


def _session_fixtures(item: pytest.Item, suite: str) -> Iterator[str]:
    manager = item.session._fixturemanager  # private: see _fixture_functions
    for name in getattr(item, "fixturenames", ()):
        defs = manager.getfixturedefs(name, item)
        if defs and defs[-1].scope == "session" and _in_suite(defs[-1].func, suite):
            yield name

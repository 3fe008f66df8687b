"""The package layout: settings enter only through market_pipeline/definitions.py (and the CLI),
core/ reads no settings, stages depend on each other by asset key, and one process can hold two
code locations built from different settings."""

from __future__ import annotations

import ast
import datetime as dt
import os
import re
import subprocess
from pathlib import Path

import dagster as dg

from market_pipeline_tests.support.project import REPO_ROOT, VENV_BIN

PACKAGE = REPO_ROOT / "market_pipeline"

# Where `load_settings` may be named at all: the settings module, the code location, the CLI
# (its entry points load the settings once) and the benchmark (a script with its own settings).
LOAD_SETTINGS_ALLOWED = ("settings.py", "definitions.py", "cli/", "bench/")

# Modules stay small (issue 37): one over MAX_MODULE_LINES lines says why in a comment line
# `# long module: <reason>` among its first LONG_MODULE_REASON_LINES lines (above its docstring).
MAX_MODULE_LINES = 500
LONG_MODULE_REASON_LINES = 3
LONG_MODULE_REASON = re.compile(r"# long module: \S")


def _modules() -> dict[str, ast.Module]:
    return {
        path.relative_to(PACKAGE).as_posix(): ast.parse(path.read_text(), filename=str(path))
        for path in sorted(PACKAGE.rglob("*.py"))
    }


def _names(tree: ast.Module) -> set[str]:
    """Every identifier a module names: variables, attributes and imported names."""
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            found.add(node.id)
        elif isinstance(node, ast.Attribute):
            found.add(node.attr)
        elif isinstance(node, ast.alias):
            found.add(node.name.rsplit(".", 1)[-1])
            if node.asname:
                found.add(node.asname)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            found.add(node.name)
    return found


def test_load_settings_is_named_only_where_settings_enter() -> None:
    offenders = [
        relative
        for relative, tree in _modules().items()
        if "load_settings" in _names(tree) and not relative.startswith(LOAD_SETTINGS_ALLOWED)
    ]
    assert offenders == [], f"load_settings outside {LOAD_SETTINGS_ALLOWED}: {offenders}"


def test_import_contracts_hold() -> None:
    """The layer rules of pyproject.toml ([tool.importlinter]): core and vendors import no Dagster
    and nothing above them, stages reach vendors only through the protocol and the registry, and
    stages do not import each other (they depend by asset key)."""
    result = subprocess.run(
        [str(VENV_BIN / "lint-imports"), "--no-cache"], cwd=REPO_ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout[-4000:]


def test_two_code_locations_with_different_settings_in_one_process(tmp_path: Path) -> None:
    from market_pipeline.definitions import build_definitions
    from market_pipeline.settings import load_settings

    environ = dict(os.environ)
    first = load_settings(start_date=dt.date(2024, 1, 1), data_dir=tmp_path / "first")
    second = load_settings(start_date=dt.date(2024, 6, 1), data_dir=tmp_path / "second")
    defs_first, defs_second = build_definitions(first), build_definitions(second)
    assert dict(os.environ) == environ  # built from the settings given, not from the environment

    for defs, settings in ((defs_first, first), (defs_second, second)):
        graph = defs.resolve_asset_graph()
        partitions = {graph.get(key).partitions_def for key in graph.materializable_asset_keys}
        assert len(partitions) == 1  # every asset of a code location shares its days
        (days,) = partitions
        assert days.get_first_partition_key() == settings.start_date.isoformat()
        assert defs.resolve_job_def("daily_pipeline").partitions_def == days
        with dg.build_resources({"pipeline": defs.resources["pipeline"]}) as resources:
            assert resources.pipeline is settings  # the settings object itself, no reload
        warehouse = defs.resources["warehouse_io_manager"]
        assert Path(warehouse.database) == settings.warehouse_path.resolve()
    assert (
        defs_first.resolve_assets_def("raw_trades").partitions_def
        != defs_second.resolve_assets_def("raw_trades").partitions_def
    )


def test_every_daily_asset_gets_a_freshness_check() -> None:
    from market_pipeline.definitions import build_definitions
    from market_pipeline.settings import load_settings

    defs = build_definitions(load_settings())
    graph = defs.resolve_asset_graph()
    fresh = {key.asset_key for key in graph.asset_check_keys if key.name == "freshness"}
    daily = {key for key in graph.materializable_asset_keys if graph.get(key).partitions_def is not None}
    assert daily and fresh == daily
    job = defs.resolve_job_def("freshness_checks")
    assert {key.asset_key for key in job.asset_layer.asset_graph.asset_check_keys if key.name == "freshness"} >= daily


def test_no_module_over_500_lines_without_a_reason_at_its_top() -> None:
    """No module in market_pipeline/ is over MAX_MODULE_LINES lines without a one-line reason at
    its top (`# long module: <reason>`), and no module shorter than that keeps a stale one."""
    problems = []
    for path in sorted(PACKAGE.rglob("*.py")):
        lines = path.read_text().splitlines()
        name = path.relative_to(REPO_ROOT).as_posix()
        reason = any(LONG_MODULE_REASON.match(line) for line in lines[:LONG_MODULE_REASON_LINES])
        if len(lines) > MAX_MODULE_LINES and not reason:
            problems.append(
                f"{name}: {len(lines)} lines, over {MAX_MODULE_LINES}: split it, or say why not in a "
                f"'# long module: <reason>' line among its first {LONG_MODULE_REASON_LINES}"
            )
        elif reason and len(lines) <= MAX_MODULE_LINES:
            problems.append(f"{name}: {len(lines)} lines, not over {MAX_MODULE_LINES}: drop its '# long module:' line")
    assert not problems, "\n".join(problems)


def _imported_modules(tree: ast.Module, names: set[str]) -> tuple[set[str], set[str]]:
    """(modules of market_pipeline imported at module level, those imported inside functions) by a
    module's tree; `typing.TYPE_CHECKING` blocks left out (they never run)."""
    top: set[str] = set()
    local: set[str] = set()

    def resolve(name: str) -> str | None:
        while name and name not in names:
            name = name.rpartition(".")[0]
        return name or None

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue
            if isinstance(child, ast.ImportFrom) and child.module:
                # `from package import submodule` imports the submodule; `from module import name`, the module.
                found = [
                    f"{child.module}.{alias.name}" if f"{child.module}.{alias.name}" in names else child.module
                    for alias in child.names
                ]
            elif isinstance(child, ast.Import):
                found = [alias.name for alias in child.names]
            else:
                visit(child, in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)))
                continue
            for name in found:
                module = resolve(name) if name.startswith("market_pipeline") else None
                if module:
                    (local if in_function else top).add(module)

    visit(tree, False)
    return top, local


def test_no_import_cycle_and_no_local_import_breaks_one() -> None:
    """The package's module-level imports form no cycle, and no import inside a function closes one
    (a function-level import is only for start-up cost, never to get round a cycle)."""
    modules = {
        ".".join(("market_pipeline", *Path(path).with_suffix("").parts)).removesuffix(".__init__"): tree
        for path, tree in _modules().items()
    }
    graph = {}
    local = {}
    for name, tree in modules.items():
        top, inner = _imported_modules(tree, set(modules))
        graph[name], local[name] = top - {name}, inner - {name}

    def reaches(start: str, goal: str) -> bool:
        seen, stack = set(), [start]
        while stack:
            module = stack.pop()
            if module == goal:
                return True
            if module not in seen:
                seen.add(module)
                stack.extend(graph[module])
        return False

    cycles = sorted(f"{a} <-> {b}" for a in graph for b in graph[a] if a < b and reaches(b, a))
    broken = sorted(f"{a} imports {b} inside a function" for a in local for b in local[a] if reaches(b, a))
    assert not cycles and not broken, cycles + broken


# The only module-level names core assigns from a function, each a cache, counter or process
# resource rather than a setting (settings reach core in its context, core/context.py).
CORE_PROCESS_STATE = {
    "core/telemetry/telemetry.py": {"_state", "_state_key"},  # the exporters built for a configuration
    "core/telemetry/progress.py": {"_compiles_published"},  # numba's compile listener, added once
    "core/lake/local_copies.py": {"_counts"},  # the requests this process made to the bucket
    "core/structured_logs.py": {"_root_handler"},  # the process's logging handler (logging is per process)
}


def test_core_takes_no_setting_through_module_state() -> None:
    """No function in core/ rebinds a module-level name except the caches and counters listed above:
    a setting (a key, a switch, a sink) comes in the core context the entry point binds."""
    found: dict[str, set[str]] = {}
    for path, tree in _modules().items():
        if path.startswith("core/"):
            names = {name for node in ast.walk(tree) if isinstance(node, ast.Global) for name in node.names}
            if names:
                found[path] = names
    assert found == CORE_PROCESS_STATE

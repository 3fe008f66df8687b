"""A pytest plugin: what a run of the suite costs, against a budget written in one place.

Registered by pyproject.toml (`addopts = -p market_pipeline_tests.support.budget`). Two figures are
counted, per test and in total, and compared with market_pipeline_tests/budget.toml:

* generated instrument-days: every synthetic generation (`vendors.synthetic.generate.generate_day`)
  writes <root>/_ground_truth/synthetic/exchange=X/symbol=Y/dt=D/manifest.json, whichever process ran
  it (the test itself, `market-pipeline run`, a code server, a daemon's run worker);
* whole-graph runs: Dagster runs that started (`start_time` set) whose asset selection, or failing
  that whose execution plan, holds both the first stage's books and the last stage's metrics
  (`market-pipeline run`/`demo` without --select, the daily_pipeline job, a backfill of every asset),
  read from the SQLite run storage (<DAGSTER_HOME>/history/runs.db, table `runs`) of every instance.

How: nothing in the production package knows about it; the tests leave these files behind anyway.
After each test (its teardown included) the process that ran it walks its pytest basetemp (an xdist
worker's own) and records the manifests and runs it has not seen before, attributed to that test: a
module or session fixture's generations and runs go to the first test that used the fixture. A
manifest is identified by its mtime_ns and content digest, not by its path, so a copy of a lake made
by shutil.copytree (copy2 keeps mtimes) is no generation, while a regeneration (a new mtime) is one;
a run by its run id, so a copied instance counts once. The DAGSTER_HOME the session started with
(CI's throwaway instance, or the project's dagster_home) is read too, from a baseline taken when the
process starts. The walk after a test visits only the basetemp entries made since its module's first
test began; after a module's last test, and once more when the session ends, it visits them all, so
a write into an older directory (a session fixture's) is counted then: attributed to that module's
last test, or to "(session end)".
Under pytest-xdist (`-n 2 --dist loadfile`) each worker sends its records to the controller through
`workeroutput` (xdist's channel for it) when it finishes; the controller drops duplicates (one key
from two workers), walks the directory the workers' basetemps share (where support/research_lake.py
builds its lake once per run, under a lock) and adds up. Without xdist the one process does both.

The budget is enforced only when the whole suite ran: with -k, -m, --lf, --sw, --deselect, --ignore,
test ids or paths narrower than `testpaths`, or any test deselected, the counts are printed only.

Limits. Not counted are
* generations whose manifest is gone when the test ends (generated into a temporary directory that
  was removed), and of several generations of one day at one path within one test all but the last;
* generations and runs outside the basetemp and the session's DAGSTER_HOME: the benchmark's graph
  runs (`bench.graph.run_graph` uses a DAGSTER_HOME under tempfile.mkdtemp, removed afterwards), the
  runs of PostgreSQL-backed instances (e2e/test_postgres.py, e2e/test_distributed_backfill.py), of
  in-process ephemeral instances (dg.materialize without `instance=`), `mktemp -d` in the runbook;
* runs that never started (queued by a sensor, failed to launch);
* the records of a worker that crashed (the run fails anyway; the summary says they are missing).
Two generations of identical content stamped in the same filesystem timestamp tick (a few ms, in two
workers at once) count once. Under xdist, what a session fixture made in the shared directory is
attributed to that directory, not to a test. Lake partition directories (exchange=*, symbol=*,
dt=*) outside _ground_truth are not walked.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import tomllib
import zlib
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import closing
from pathlib import Path

import pytest

BUDGET_FILE = Path(__file__).resolve().parents[1] / "budget.toml"
DAYS = "generated_instrument_days"
RUNS = "whole_graph_runs"
LABELS = {DAYS: "generated instrument-days", RUNS: "whole-graph runs"}
# A run materializing both the books and the metrics (the graph's first and last stages) is a
# whole-graph run: raw, books, quality, metrics, bars, agreement all ran.
WHOLE_GRAPH_ASSETS = frozenset({"reconstructed_books", "pipeline_metrics"})
GROUND_TRUTH = "_ground_truth"
MANIFEST_GLOB = "synthetic/exchange=*/symbol=*/dt=*/manifest.json"
PARTITION_PREFIXES = ("exchange=", "symbol=", "dt=")  # lake partitions: files only, not walked
PLUGIN_NAME = "market_pipeline_budget"
WORKER_OUTPUT = "market_pipeline_budget"
SESSION_END = "(session end)"
SHARED = "(the xdist workers' shared temp dir: session fixtures built once per run)"
COUNTED = ("day:", "run:")  # the key prefixes that count (not "other-run:")


# ---------------------------------------------------------------------------------------
# Finding generations and runs on disk
# ---------------------------------------------------------------------------------------


def walk(root: Path) -> Iterator[tuple[str, Path]]:
    """(DAYS, a manifest.json) and (RUNS, a runs.db) under root, symlinks not followed."""
    stack = [root]
    while stack:
        try:
            entries = list(os.scandir(stack.pop()))
        except OSError:  # removed meanwhile, or not ours to read
            continue
        for entry in entries:
            try:
                if not entry.is_dir(follow_symlinks=False):
                    continue
            except OSError:
                continue
            path = Path(entry.path)
            if entry.name == GROUND_TRUTH:
                for manifest in sorted(path.glob(MANIFEST_GLOB)):
                    yield DAYS, manifest
            elif entry.name.startswith(PARTITION_PREFIXES):
                continue
            elif entry.name == "history" and (path / "runs.db").is_file():
                yield RUNS, path / "runs.db"  # the rest of history/ is one event log per run
            else:
                stack.append(entry.path)


def _run_assets(db: sqlite3.Connection, body: dict) -> set[str]:
    """The asset keys a run selected, or failing that the step keys of its execution plan."""
    selection = body.get("asset_selection")
    if isinstance(selection, dict) and selection.get("__frozenset__"):
        return {"/".join(key["path"]) for key in selection["__frozenset__"]}
    plan_id = body.get("execution_plan_snapshot_id")
    if plan_id:
        row = db.execute("SELECT snapshot_body FROM snapshots WHERE snapshot_id = ?", (plan_id,)).fetchone()
        if row:
            return {step["key"] for step in json.loads(zlib.decompress(row[0]))["steps"]}
    return set()


class Scanner:
    """New generations and whole-graph runs under some roots since the last scan, by key."""

    def __init__(self) -> None:
        self.seen: set[str] = set()
        self._stamps: dict[Path, tuple[int, ...]] = {}  # a file unchanged since it was read is skipped

    def scan(self, files: Iterable[tuple[str, Path]], baseline: bool = False) -> list[tuple[str, str]]:
        """[(kind, key)] of what is new in these files (from `walk`): DAYS once per manifest written,
        RUNS once per whole-graph run. A baseline marks what is there as seen without telling it."""
        found: list[tuple[str, str]] = []
        for kind, path in files:
            try:
                stat = path.stat()
            except OSError:
                continue
            stamp = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
            if self._stamps.get(path) == stamp:
                continue
            new = self._manifest(path, stat.st_mtime_ns) if kind == DAYS else self._runs(path, classify=not baseline)
            if new is None:  # unreadable now (being written, locked): next time
                continue
            self._stamps[path] = stamp
            found += [(kind, key) for key in new if key.startswith(COUNTED) and key not in self.seen]
            self.seen.update(new)
        return found

    def _manifest(self, path: Path, mtime_ns: int) -> list[str] | None:
        try:
            digest = hashlib.sha256(path.read_bytes()).hexdigest()[:32]
        except OSError:
            return None
        return [f"day:{mtime_ns}:{digest}"]

    def _runs(self, path: Path, classify: bool = True) -> list[str] | None:
        """Keys of the runs in a runs.db that started: "run:<id>" for a whole-graph run, "other-run:<id>"
        for the others (and for every run when not `classify`)."""
        try:
            with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)) as db:
                keys = []
                rows = db.execute("SELECT run_id, run_body FROM runs WHERE start_time IS NOT NULL").fetchall()
                for run_id, body in rows:
                    if f"run:{run_id}" in self.seen or f"other-run:{run_id}" in self.seen:
                        continue
                    whole = classify and WHOLE_GRAPH_ASSETS <= _run_assets(db, json.loads(body))
                    keys.append(f"{'run' if whole else 'other-run'}:{run_id}")
                return keys
        except sqlite3.OperationalError:  # locked, or its tables not created yet: next time
            return None
        except (sqlite3.Error, zlib.error, ValueError, KeyError, TypeError):  # not a run storage (an encrypted copy)
            return []


# ---------------------------------------------------------------------------------------
# The budget and the run's scope
# ---------------------------------------------------------------------------------------


def read_budget(path: Path) -> dict[str, int]:
    with path.open("rb") as file:
        table = tomllib.load(file)
    missing = [kind for kind in LABELS if not isinstance(table.get(kind), int)]
    if missing:
        raise pytest.UsageError(f"{path}: no integer {', '.join(missing)}")
    return {kind: table[kind] for kind in LABELS}


def narrowed_by(config: pytest.Config, deselected: int) -> str | None:
    """Why this run is not the whole suite, None when it is."""
    option = config.option
    for flag, dest in (("-k", "keyword"), ("-m", "markexpr"), ("--lf", "lf"), ("--sw", "stepwise")):
        if getattr(option, dest, None):
            return flag
    for flag, dest in (("--deselect", "deselect"), ("--ignore", "ignore"), ("--ignore-glob", "ignore_glob")):
        if getattr(option, dest, None):
            return flag
    if deselected:
        return f"{deselected} test(s) deselected"
    if config.args_source == pytest.Config.ArgsSource.TESTPATHS:
        return None
    rootdir = config.rootpath.resolve()
    wanted = {(rootdir / path).resolve() for path in config.getini("testpaths")} or {rootdir}
    given = set()
    for arg in config.args:
        path, test_id, _ = arg.partition("::")
        if test_id:
            return "test ids given"
        given.add((config.invocation_params.dir / path).resolve())
    return None if given == wanted else "paths narrower than testpaths"


# ---------------------------------------------------------------------------------------
# The plugin
# ---------------------------------------------------------------------------------------


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("budget", "the suite's budget (market_pipeline_tests/support/budget.py)")
    group.addoption(
        "--budget-file", default=None, help=f"TOML file with the budget (default: {BUDGET_FILE.name} of the tests)"
    )
    group.addoption(
        "--budget-report", action="store_true", help="list what every test generated and ran, even within budget"
    )


def pytest_configure(config: pytest.Config) -> None:
    config.pluginmanager.register(Budget(config), PLUGIN_NAME)


@pytest.fixture(scope="session", autouse=True)
def _budget_basetemp(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> None:
    """The basetemp this process's tests write in, for the walks."""
    request.config.pluginmanager.get_plugin(PLUGIN_NAME).basetemp = tmp_path_factory.getbasetemp()


class Budget:
    def __init__(self, config: pytest.Config):
        self.config = config
        self.is_worker = hasattr(config, "workerinput")
        self.budget_file = Path(config.getoption("budget_file") or BUDGET_FILE)
        self.budget = None if self.is_worker else read_budget(self.budget_file)
        self.scanner = Scanner()
        self.basetemp: Path | None = None  # set by the _budget_basetemp fixture where tests run
        self.records: dict[str, tuple[str, str]] = {}  # key -> (kind, test)
        self.deselected = 0
        self.worker_basetemps: list[Path] = []
        self.lost_workers: list[str] = []
        self.outcome: tuple[dict[str, int], str | None] | None = None
        self._module: Path | None = None
        self._module_entries: set[str] = set()
        # The instance the session started with (CI's throwaway one, the project's dagster_home):
        # what it holds already was not made by this run.
        home = os.environ.get("DAGSTER_HOME")
        self.home_runs = [(RUNS, Path(home) / "history" / "runs.db")] if home else []
        self.scanner.scan(self.home_runs, baseline=True)

    # Where tests run (a worker, or the only process) -------------------------------------

    def _scan(self, test: str, entries: Iterable[str], homes: bool) -> None:
        assert self.basetemp is not None
        files = [found for name in sorted(entries) for found in walk(self.basetemp / name)]
        for kind, key in self.scanner.scan(files + (self.home_runs if homes else [])):
            self.records.setdefault(key, (kind, test))

    def _entries(self) -> set[str]:
        try:
            return set(os.listdir(self.basetemp)) if self.basetemp else set()
        except OSError:
            return set()

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_protocol(self, item: pytest.Item, nextitem: pytest.Item | None):
        if item.path != self._module:
            self._module, self._module_entries = item.path, self._entries()
        try:
            return (yield)
        finally:
            if self.basetemp is not None:
                last_in_module = nextitem is None or nextitem.path != item.path
                entries = self._entries()
                self._scan(item.nodeid, entries if last_in_module else entries - self._module_entries, last_in_module)

    def pytest_deselected(self, items: list[pytest.Item]) -> None:
        self.deselected += len(items)

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if self.basetemp is not None:
            self._scan(SESSION_END, self._entries(), homes=True)
        if self.is_worker:
            self.config.workeroutput[WORKER_OUTPUT] = {
                "records": [[key, kind, test] for key, (kind, test) in self.records.items()],
                "deselected": self.deselected,
                "basetemp": str(self.basetemp) if self.basetemp else None,
            }
            return
        self._scan_shared()
        if self.config.option.collectonly:
            return
        counts = Counter(kind for kind, _ in self.records.values())
        totals = {kind: counts[kind] for kind in LABELS}
        reason = narrowed_by(self.config, self.deselected)
        if reason is None and self.lost_workers:
            reason = f"the records of {', '.join(self.lost_workers)} were lost"
        self.outcome = (totals, reason)
        if self.over() and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    # The xdist controller ------------------------------------------------------------

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node: object, error: object) -> None:
        output = getattr(node, "workeroutput", {}).get(WORKER_OUTPUT)
        if output is None:  # the worker crashed
            self.lost_workers.append(getattr(getattr(node, "gateway", None), "id", "a worker"))
            return
        for key, kind, test in output["records"]:
            self.records.setdefault(key, (kind, test))
        self.deselected = max(self.deselected, output["deselected"])  # every worker deselects the same
        if output["basetemp"]:
            self.worker_basetemps.append(Path(output["basetemp"]))

    def _scan_shared(self) -> None:
        """What the workers made in the directory their basetemps share (a session fixture built
        once per run under a lock, e.g. research_lake), not in any worker's own basetemp."""
        workers = {path.name for path in self.worker_basetemps}
        for shared in sorted({path.parent for path in self.worker_basetemps}):
            try:
                entries = sorted(set(os.listdir(shared)) - workers)
            except OSError:
                continue
            files = [found for name in entries if not name.startswith("popen-") for found in walk(shared / name)]
            for kind, key in self.scanner.scan(files):
                self.records[key] = (kind, SHARED)  # made here, even if a worker saw a copy first

    # The report ----------------------------------------------------------------------

    def over(self) -> list[str]:
        """The figures over budget, when the budget is enforced."""
        if self.outcome is None or self.outcome[1] is not None:
            return []
        return [kind for kind in LABELS if self.outcome[0][kind] > self.budget[kind]]

    def per_test(self) -> list[tuple[str, Counter]]:
        """(test, its counts by kind), the biggest first."""
        tests: dict[str, Counter] = {}
        for kind, test in self.records.values():
            tests.setdefault(test, Counter())[kind] += 1
        return sorted(tests.items(), key=lambda item: (-item[1][DAYS], -item[1][RUNS], item[0]))

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        if self.outcome is None:
            return
        totals, reason = self.outcome
        where = os.path.relpath(self.budget_file, self.config.invocation_params.dir)
        over = self.over()
        if over:
            terminalreporter.write_sep("=", "budget exceeded", red=True, bold=True)
            for kind in over:
                terminalreporter.write_line(
                    f"{totals[kind]} {LABELS[kind]}, over the budget: {kind} = {self.budget[kind]} in {where}",
                    red=True,
                )
        if over or self.config.getoption("budget_report"):
            terminalreporter.write_line("per test, the biggest first:")
            for test, counts in self.per_test():
                terminalreporter.write_line(
                    f"  {counts[DAYS]:4d} instrument-days {counts[RUNS]:3d} whole-graph runs  {test}"
                )
        figures = ", ".join(f"{totals[kind]}/{self.budget[kind]} {LABELS[kind]}" for kind in LABELS)
        scope = f"; not enforced: {reason}" if reason else ""
        terminalreporter.write_line(f"budget: {figures} ({where}{scope})", red=bool(over), bold=bool(over))

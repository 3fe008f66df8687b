"""Shared fixtures: a hermetic environment, a throwaway Dagster instance and a small vendor lake."""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import shutil
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import polars as pl
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
PROJECT_DAGSTER_YAML = REPO_ROOT / "dagster_home" / "dagster.yaml"
VENV_BIN = Path(sys.executable).parent

# The package may not be pip-installed (e.g. the editable install cannot build): make the
# source tree importable in this process either way. Subprocesses get it through PYTHONPATH.
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))


DEFAULT_INSTRUMENTS = (("BINANCE", "BTC-USDT"), ("BINANCE_FUTURES", "BTC-USDT-PERP"))
# Every test's environment (see _hermetic_env); production defaults and `make bench` stay at 100 ms.
TEST_SNAPSHOT_INTERVAL_MS = 60_000
TEST_CADENCE = {
    "PIPELINE_SYNTHETIC__SNAPSHOT_INTERVAL_MS": str(TEST_SNAPSHOT_INTERVAL_MS),
    "PIPELINE_BOOK__SAMPLE_INTERVAL_MS": "60000",
}
NS = 1_000_000_000


# ---------------------------------------------------------------------------------------
# Scheduling on pytest-xdist workers (`make test`: -n auto --dist loadfile)
# ---------------------------------------------------------------------------------------

# A worker takes whole files, so module fixtures are built once; the files that share a session
# fixture go to one worker as one unit, so it is built once too. (xdist_group marks would say so,
# but --dist loadgroup of pytest-xdist 3.8 groups nothing under pytest 9.2: it renames the tests'
# node ids through an attribute pytest no longer reads.)
SHARED_FIXTURE_FILES = {
    "research_lake": ("test_read_api", "test_export_hftbacktest", "test_research_guide"),
}
# Units handed out first, the most expensive first: started last, one of them would leave the
# other core idle at the end of the suite. Then the other units with a test marked slow, then the
# rest, each in collection order.
HEAVIEST_FIRST = (
    "test_ui",
    "test_s3_lake",
    "research_lake",
    "test_source_agreement",
    "test_ui_graphql",  # not marked slow (it is in `make test-quick`), but it starts dagster-webserver
)
_UNIT_OF_FILE = {stem: fixture for fixture, stems in SHARED_FIXTURE_FILES.items() for stem in stems}


def _scheduling_unit(path: str) -> str:
    stem = Path(path).stem
    return _UNIT_OF_FILE.get(stem, stem)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        for fixture in SHARED_FIXTURE_FILES.keys() & set(item.fixturenames):
            if item.path.stem not in SHARED_FIXTURE_FILES[fixture]:
                raise pytest.UsageError(
                    f"{item.path.name} uses the session fixture {fixture}: "
                    "add it to SHARED_FIXTURE_FILES in market_pipeline_tests/conftest.py"
                )
    rank = {unit: index for index, unit in enumerate(HEAVIEST_FIRST)}
    slow = len(HEAVIEST_FIRST)
    for item in items:
        if item.get_closest_marker("slow"):
            rank.setdefault(_scheduling_unit(str(item.path)), slow)
    items.sort(key=lambda item: rank.get(_scheduling_unit(str(item.path)), slow + 1))  # stable: files stay whole


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object | None:
    """--dist loadfile with the units above, handed out in collection order (not by test count)."""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class SharedFixtureFileScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return _scheduling_unit(nodeid.split("::", 1)[0])

    config.option.loadscopereorder = False
    return SharedFixtureFileScheduling(config, log)


# ---------------------------------------------------------------------------------------
# Hermetic environment
# ---------------------------------------------------------------------------------------


def _hermetic_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    """No developer PIPELINE_* variables; one worker; the tests' cadence."""
    for name in list(os.environ):
        if name.startswith("PIPELINE_"):
            monkeypatch.delenv(name, raising=False)
    # One process per step unless a test asks for workers: a pool per multi-instrument test
    # would cost seconds of start-up each (test_parallel.py covers the pool).
    monkeypatch.setenv("PIPELINE_WORKERS", "1")
    # The cheapest world by default: a synthetic vendor snapshot and a rebuilt book row a minute,
    # not every 100 ms (864,000 rows of each per instrument-day, whatever the scale). A test about
    # the cadence sets its own; counts that depend on it are derived from the settings.
    for name, value in TEST_CADENCE.items():
        monkeypatch.setenv(name, value)


@pytest.fixture(scope="session", autouse=True)
def _hermetic_session_env() -> Iterator[None]:
    """The hermetic variables for session and module fixtures too, which are set up before any
    function-scoped fixture of the test that first uses them."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        _hermetic_variables(monkeypatch)
        yield


@pytest.fixture(autouse=True)
def _hermetic_env(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The hermetic variables again (a test may change them) and an empty cwd (no stray `.env`)."""
    _hermetic_variables(monkeypatch)
    cwd = tmp_path_factory.mktemp("cwd")
    monkeypatch.chdir(cwd)
    return cwd


@pytest.fixture(autouse=True)
def _no_process_settings() -> Iterator[None]:
    """What a pipeline resource hands core for the process (metric exporters, master key, lake
    encryption) does not outlive the test that initialized it."""
    yield
    from market_pipeline.core.lake import parquet_io
    from market_pipeline.core.security import crypto
    from market_pipeline.core.telemetry import telemetry

    telemetry.configure(telemetry.NO_EXPORT)
    crypto.use_master_key(None)
    parquet_io.use_lake_encryption(False)


@pytest.fixture
def dagster_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    home = tmp_path / "dagster_home"
    home.mkdir()
    if PROJECT_DAGSTER_YAML.is_file():
        shutil.copy(PROJECT_DAGSTER_YAML, home / "dagster.yaml")
    else:
        (home / "dagster.yaml").write_text("")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    return home


@pytest.fixture
def data_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    path = tmp_path / "data"
    path.mkdir()
    monkeypatch.setenv("PIPELINE_DATA_DIR", str(path))
    return path


@pytest.fixture
def instance(dagster_home: Path) -> Iterator[dg.DagsterInstance]:  # noqa: F821
    import dagster as dg

    inst = dg.DagsterInstance.get()  # reads $DAGSTER_HOME/dagster.yaml of the tmp home
    try:
        yield inst
    finally:
        inst.dispose()


def code_location(settings: object | None = None) -> dg.Definitions:  # noqa: F821
    """The code location built from `settings` (the environment's settings now, when not given),
    as `market_pipeline.definitions.build_definitions` makes it for Dagster and the CLI."""
    from market_pipeline.definitions import build_definitions
    from market_pipeline.settings import load_settings

    return build_definitions(settings if settings is not None else load_settings())


def assets_named(defs: dg.Definitions, *names: str) -> list:  # noqa: F821
    """The AssetsDefinitions of `defs` holding these asset keys, in the order given, as the stages
    built them (not bound to the code location's resources: a test passes its own)."""
    by_key = {key.to_user_string(): asset for asset in defs.assets or [] for key in asset.keys}
    return [by_key[name] for name in names]


def range_tags(start: str, end: str) -> dict[str, str]:
    """Run tags that make a single-run backfill policy asset process a partition range."""
    return {
        "dagster/asset_partition_range_start": start,
        "dagster/asset_partition_range_end": end,
    }


@pytest.fixture(name="range_tags")
def range_tags_fixture() -> Callable[[str, str], dict[str, str]]:
    return range_tags


def subprocess_env(**extra: str) -> dict[str, str]:
    """The current (hermetic) environment plus the source tree on PYTHONPATH."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p)
    env.update(extra)
    return env


@pytest.fixture
def progress_tasks() -> Iterator[list[tuple[str, bool]]]:
    """(label, finished) of every progress task published while the test runs, as the CLI would
    see them; kernels compiling (transient tasks of a cold numba cache) left out."""
    from market_pipeline.core.telemetry import progress

    seen: list[tuple[str, bool]] = []
    previous = progress.set_sink(lambda u: None if u.transient else seen.append((u.label, u.finished)))
    yield seen
    progress.set_sink(previous)


def sha256_tree(root: Path) -> dict[str, str]:
    """sha256 of every file under root, keyed by relative path."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


# ---------------------------------------------------------------------------------------
# A small vendor-like lake
# ---------------------------------------------------------------------------------------

# Client spelling (lakeapi renames on read) and stored spelling (what is in the bucket).
CLIENT_NAMES = {
    "origin_time": "origin_time",
    "received_time": "received_time",
    "quantity": "quantity",
    "trade_id": "trade_id",
}
STORED_NAMES = {
    "origin_time": "timestamp",
    "received_time": "receipt_timestamp",
    "quantity": "amount",
    "trade_id": "id",
}


def day_start_ns(day: dt.date) -> int:
    return int(dt.datetime.combine(day, dt.time(), dt.UTC).timestamp()) * NS


def vendor_frame(table: str, day: dt.date, rows: int, spelling: str = "client", seed: int = 0) -> pl.DataFrame:
    """A deterministic vendor-like frame for one table-day in the given column spelling."""
    names = CLIENT_NAMES if spelling == "client" else STORED_NAMES
    base = day_start_ns(day)
    step = (86_400 * NS) // (rows + 1)
    received = [base + (i + 1) * step for i in range(rows)]
    origin = [t - 1_000_000 for t in received]  # 1 ms before receipt
    mid = 60_000.0 + seed * 100
    # Prices step by 0.1, the coarsest configured tick, so every instrument's data is on its grid.
    if table == "trades":
        return pl.DataFrame(
            {
                names["origin_time"]: origin,
                names["received_time"]: received,
                "side": ["buy" if i % 2 == 0 else "sell" for i in range(rows)],
                "price": [mid + (i % 7) * 0.1 for i in range(rows)],
                names["quantity"]: [0.001 * (1 + i % 5) for i in range(rows)],
                names["trade_id"]: [str(1_000_000 + seed * 10_000 + i) for i in range(rows)],
            },
            schema={
                names["origin_time"]: pl.Int64,
                names["received_time"]: pl.Int64,
                "side": pl.String,
                "price": pl.Float64,
                names["quantity"]: pl.Float64,
                names["trade_id"]: pl.String,
            },
        )
    if table == "book_delta_v2":
        return pl.DataFrame(
            {
                names["origin_time"]: origin,
                names["received_time"]: received,
                "sequence_number": [10_000 + i for i in range(rows)],
                "side_is_bid": [i % 2 == 0 for i in range(rows)],
                "price": [mid + (-1 if i % 2 == 0 else 1) * (1 + i % 10) * 0.1 for i in range(rows)],
                "size": [0.0 if i % 9 == 8 else 0.5 + (i % 3) for i in range(rows)],
            },
            schema={
                names["origin_time"]: pl.Int64,
                names["received_time"]: pl.Int64,
                "sequence_number": pl.Int64,
                "side_is_bid": pl.Boolean,
                "price": pl.Float64,
                "size": pl.Float64,
            },
        )
    if table == "book":
        from market_pipeline.core.lake.schemas import BOOK_LEVELS

        data: dict[str, list] = {
            names["origin_time"]: origin,
            names["received_time"]: received,
            "sequence_number": [10_000 + 3 * i for i in range(rows)],
        }
        for side, sign in (("bid", -1), ("ask", 1)):
            for level in range(BOOK_LEVELS):
                # The last rows have only 15 levels: absent levels are null, which is legal.
                present = [not (i % 4 == 3 and level >= 15) for i in range(rows)]
                data[f"{side}_{level}_price"] = [(mid + sign * (level + 1) * 0.1) if ok else None for ok in present]
                data[f"{side}_{level}_size"] = [(1.0 + level) if ok else None for ok in present]
        schema = {name: (pl.Int64 if i < 3 else pl.Float64) for i, name in enumerate(data)}
        return pl.DataFrame(data, schema=schema)
    raise ValueError(f"no vendor frame for table {table!r}")


def vendor_file(root: Path, table: str, exchange: str, symbol: str, day: dt.date, name: str = "data.parquet") -> Path:
    from market_pipeline.core.lake.paths import partition_dir

    return partition_dir(root, table, exchange, symbol, day) / name


class VendorLake:
    """Writes vendor-like files laid out as {table}/exchange=X/symbol=Y/dt=D/*.parquet."""

    def __init__(self, root: Path):
        self.root = root
        self.rows: dict[tuple[str, str, str, dt.date], int] = {}

    def __call__(
        self,
        tables: Iterable[str] = ("trades", "book", "book_delta_v2"),
        instruments: Iterable[tuple[str, str]] = DEFAULT_INSTRUMENTS,
        days: Iterable[dt.date] = (),
        rows: int | Callable[[str, int, dt.date], int] = 50,
        spelling: str = "alternate",
    ) -> Path:
        """Write one file per table/instrument/day.

        `rows` is a count or a function (table, instrument index, day) -> count; `spelling` is
        "client", "stored" or "alternate" (client names for the first instrument, stored for the next...).
        """
        for table in tables:
            for index, (exchange, symbol) in enumerate(instruments):
                for day in days:
                    n = rows(table, index, day) if callable(rows) else rows
                    sp = spelling if spelling != "alternate" else ("client" if index % 2 == 0 else "stored")
                    df = vendor_frame(table, day, n, sp, seed=index)
                    path = vendor_file(self.root, table, exchange, symbol, day)
                    path.parent.mkdir(parents=True, exist_ok=True)
                    df.write_parquet(path)
                    self.rows[(table, exchange, symbol, day)] = n
        return self.root

    def path(self, table: str, exchange: str, symbol: str, day: dt.date) -> Path:
        return vendor_file(self.root, table, exchange, symbol, day)

    def rows_for_day(self, table: str, day: dt.date) -> int:
        return sum(n for (t, _, _, d), n in self.rows.items() if t == table and d == day)


@pytest.fixture
def vendor_lake(tmp_path: Path) -> VendorLake:
    root = tmp_path / "vendor"
    root.mkdir()
    return VendorLake(root)


def truncate_file(path: Path) -> None:
    """Cut a file in half, as an interrupted download would."""
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


# ---------------------------------------------------------------------------------------
# A small pipeline-made lake for the read API, the hftbacktest export and the research guide
# ---------------------------------------------------------------------------------------

RESEARCH_DAYS = (dt.date(2024, 3, 1), dt.date(2024, 3, 2), dt.date(2024, 3, 3))
RESEARCH_INSTRUMENT = "BINANCE:BTC-USDT"


@pytest.fixture(scope="session")
def research_lake(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Three synthetic days made by `market-pipeline run` (once per session): the first two pass
    every check (the second continues from the first's checkpoint), the last has off-grid prices,
    so raw_book_deltas' blocking price_precision check fails and no books, bars or reports follow.
    Returns {"data": data dir, "home": DAGSTER_HOME}; tests copy it before changing anything."""
    import json
    import subprocess

    root = tmp_path_factory.mktemp("research_lake")
    home, data = root / "dagster_home", root / "data"
    home.mkdir()
    (home / "dagster.yaml").write_text(PROJECT_DAGSTER_YAML.read_text())
    env = {name: value for name, value in subprocess_env().items() if not name.startswith("PIPELINE_")}
    env.update(
        DAGSTER_HOME=str(home),
        PIPELINE_DATA_DIR=str(data),
        PIPELINE_INSTRUMENTS=RESEARCH_INSTRUMENT,
        PIPELINE_START_DATE="2024-01-01",
        PIPELINE_WORKERS="1",
        **TEST_CADENCE,
        PIPELINE_SYNTHETIC__SCALE="0.005",
        PIPELINE_SYNTHETIC__FAULTS__OFF_GRID_PRICES="3",
        PIPELINE_SYNTHETIC__FAULTS__DAYS=json.dumps([RESEARCH_DAYS[-1].isoformat()]),
    )
    start, end = RESEARCH_DAYS[0].isoformat(), RESEARCH_DAYS[-1].isoformat()
    proc = subprocess.run(
        [str(VENV_BIN / "market-pipeline"), "run", "--start-date", start, "--end-date", end],
        env=env,
        cwd=root,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 1 and "raw_book_deltas price_precision" in proc.stdout, proc.stdout + proc.stderr
    return {"data": data, "home": home}

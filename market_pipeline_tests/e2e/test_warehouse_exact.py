"""Every numeric column of every warehouse table and view equals an independent computation.

One `market-pipeline run` (in process) over two days of the default universe, two instruments of different
ticks and lots (BINANCE:BTC-USDT 0.01 / 0.000001, BINANCE_FUTURES:BTC-USDT-PERP 0.1 / 0.001),
with faults on the second day (dropped and out-of-order messages, a clock-skew episode, float
noise). `warehouse_reference.py` recomputes each figure from the lake files with plain polars.

- Integer and decimal columns must be equal; DOUBLE columns (means, shares, quantiles of floats,
  per-second rates) within 4 ulp of the reference, which computes them from the same exact inputs.
- Every numeric column is either compared or listed in `OPERATIONAL` with the reason it cannot be
  recomputed from the lake (timings and memory of the run): a new column fails
  `test_every_numeric_column_is_compared` until it has a reference.
- The views (`raw.*`, `books.*`, `bars.ohlcv`) must give each lake file's exact values: per
  instrument-day and column, the count, sum, minimum and maximum through the view equal those of
  the file read by pyarrow (a view that rounds a decimal changes the sum).
"""

from __future__ import annotations

import datetime as dt
import json
import math
from decimal import Decimal
from pathlib import Path

import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from market_pipeline_tests.support import warehouse_reference as ref
from market_pipeline_tests.support.cli_env import cli_in_process
from market_pipeline_tests.support.project import PROJECT_DAGSTER_YAML, subprocess_env

pytestmark = [pytest.mark.slow, pytest.mark.graph]

DAYS = (dt.date(2024, 3, 1), dt.date(2024, 3, 2))
FAULTED = DAYS[1]
INTERVALS = {"1m": 60, "5m": 300, "1h": 3_600}
ENV = {
    "PIPELINE_START_DATE": "2024-01-01",
    "PIPELINE_SYNTHETIC__SCALE": "0.02",
    "PIPELINE_BARS__INTERVALS": ",".join(INTERVALS),
    "PIPELINE_SYNTHETIC__FAULTS__DROPPED_MESSAGES": "3",
    "PIPELINE_SYNTHETIC__FAULTS__OUT_OF_ORDER_ROWS": "1",
    "PIPELINE_SYNTHETIC__FAULTS__CLOCK_SKEW_EPISODES": "1",
    "PIPELINE_SYNTHETIC__FAULTS__FLOAT_NOISE_PRICES": "2",
    "PIPELINE_SYNTHETIC__FAULTS__DAYS": json.dumps([FAULTED.isoformat()]),
}
KEYS = ("dt", "exchange", "symbol")
NUMERIC = ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "DOUBLE", "FLOAT", "DECIMAL")
# Figures of the run itself, not of the data: nothing in the lake can reproduce them.
OPERATIONAL = {
    "pipeline_metrics": {
        *(
            f"{stage}_{figure}"
            for stage in ("raw_trades", "raw_book_snapshots", "raw_book_deltas", "reconstructed_books")
            for figure in ("seconds", "events_per_s", "peak_rss_mb")
        ),
        "book_batches",  # how the rebuild cut the day into batches (a setting and the day's size)
    },
}
ULPS = 4


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """`market-pipeline run` over DAYS, in this process (the claims are about the warehouse it
    writes, not the process boundary: a subprocess would import Dagster and the pipeline again)."""
    from market_pipeline.settings import load_settings

    root = tmp_path_factory.mktemp("warehouse_exact")
    (root / "dh").mkdir()
    (root / "dh" / "dagster.yaml").write_text(PROJECT_DAGSTER_YAML.read_text())
    env = subprocess_env(**ENV, PIPELINE_DATA_DIR=str(root / "data"), DAGSTER_HOME=str(root / "dh"))
    args = ["run", "--start-date", DAYS[0].isoformat(), "--end-date", DAYS[1].isoformat(), "--no-progress"]
    code, out, err = cli_in_process(args, env)
    assert code == 0, out[-3000:] + err[-3000:]
    with pytest.MonkeyPatch.context() as mp:
        for name, value in {**ENV, "PIPELINE_DATA_DIR": str(root / "data")}.items():
            mp.setenv(name, value)
        settings = load_settings()
    return {"root": root, "settings": settings}


def warehouse(run) -> duckdb.DuckDBPyConnection:
    return duckdb.connect(str(run["settings"].warehouse_path), read_only=True)


def instrument_days(run) -> list[ref.Day]:
    settings = run["settings"]
    return [
        ref.Day(settings.lake_dir, i.exchange, i.symbol, day, i.tick_size, i.lot_size)
        for i in settings.universe
        for day in DAYS
    ]


def numeric_columns(con) -> dict[str, dict[str, str]]:
    """schema.table -> {column: type} of every numeric column in the warehouse."""
    out: dict[str, dict[str, str]] = {}
    for schema, table, column, dtype in con.execute(
        "SELECT table_schema, table_name, column_name, data_type FROM information_schema.columns ORDER BY ALL"
    ).fetchall():
        if dtype.startswith(NUMERIC) or dtype.endswith("[]"):
            out.setdefault(f"{schema}.{table}", {})[column] = dtype
    return out


def same(actual, expected, dtype: str) -> bool:
    if actual is None or expected is None:
        return actual is None and expected is None
    if dtype in ("DOUBLE", "FLOAT"):
        return math.isclose(actual, expected, rel_tol=ULPS * 2.0**-52, abs_tol=0.0) or actual == expected
    if isinstance(actual, Decimal) or isinstance(expected, Decimal):
        return Decimal(actual) == Decimal(expected)
    return actual == expected


def compare(table: str, rows: pl.DataFrame, expected: dict[tuple, dict], types: dict[str, str], keys) -> list[str]:
    """Differences between the warehouse rows and the reference, one line per cell."""
    problems = []
    assert rows.height == len(expected), f"{table}: {rows.height} rows, reference {len(expected)}"
    for row in rows.iter_rows(named=True):
        key = tuple(str(row[k]) for k in keys)
        want = expected[key]
        for column, dtype in types.items():
            if column in keys:
                continue
            if column not in want:
                problems.append(f"{table}.{column}: no reference")
            elif not same(row[column], want[column], dtype):
                problems.append(f"{table}.{column} {key}: warehouse {row[column]!r}, lake {want[column]!r}")
    return problems


def crossed_events(run, d: ref.Day) -> int | None:
    """The rebuild's own counter, from the day's books materialization (Dagster's public API)."""
    import dagster as dg

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DAGSTER_HOME", str(run["root"] / "dh"))
        instance = dg.DagsterInstance.get()
    try:
        records = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey("reconstructed_books"), asset_partitions=[d.day.isoformat()]),
            limit=1,
        ).records
        detail = records[0].asset_materialization.metadata[f"{d.exchange}:{d.symbol} detail"].value
        return int(detail["counters"]["crossed_events"])
    finally:
        instance.dispose()


def day_key(d: ref.Day) -> tuple[str, ...]:
    return (d.day.isoformat(), d.exchange, d.symbol)


def test_every_numeric_column_is_compared(run):
    expected_tables = {
        "main.validation_reports",
        "main.validation_reports_hourly",
        "main.pipeline_metrics",
        "main.pipeline_metrics_hourly",
        "main.ohlcv_bars_summary",
        "bars.ohlcv",
        "books.reconstructed_books",
        "books.vendor_agreement",
        "raw.trades",
        "raw.book",
        "raw.book_delta_v2",
    }
    with warehouse(run) as con:
        assert set(numeric_columns(con)) == expected_tables


def test_every_warehouse_table_equals_the_lake_recomputed(run):
    """validation_reports(_hourly), pipeline_metrics(_hourly) and ohlcv_bars_summary, cell by cell."""
    days = instrument_days(run)
    expected: dict[str, dict[tuple, dict]] = {t: {} for t in ("validation_reports", "validation_reports_hourly")}
    expected |= {t: {} for t in ("pipeline_metrics", "pipeline_metrics_hourly", "ohlcv_bars_summary")}
    for d in days:
        daily, hourly = ref.validation(d, crossed_events(run, d))
        expected["validation_reports"][day_key(d)] = daily
        start = dt.datetime.combine(d.day, dt.time())
        for row in hourly.iter_rows(named=True):
            hour = str(start + dt.timedelta(hours=row["hour"]))
            expected["validation_reports_hourly"][(*day_key(d), hour)] = row
        micro, micro_hourly = ref.microstructure(d)
        # pipeline_metrics' quality columns are validation_reports' (read there, never recomputed).
        expected["pipeline_metrics"][day_key(d)] = {**daily, **micro}
        for row in micro_hourly.iter_rows(named=True):
            quality = hourly.row(row["hour"], named=True)
            expected["pipeline_metrics_hourly"][(*day_key(d), str(row["hour"]))] = {**quality, **row}
        for interval, seconds in INTERVALS.items():
            expected["ohlcv_bars_summary"][(*day_key(d), interval)] = ref.bars_summary(d, seconds * 10**9)
    keys = {
        "validation_reports_hourly": (*KEYS, "hour"),
        "pipeline_metrics_hourly": (*KEYS, "hour"),
        "ohlcv_bars_summary": (*KEYS, "interval"),
    }
    problems = []
    with warehouse(run) as con:
        columns = numeric_columns(con)
        for table, want in expected.items():
            types = {c: t for c, t in columns[f"main.{table}"].items() if c not in OPERATIONAL.get(table, ())}
            rows = con.execute(f'SELECT * FROM main."{table}"').pl()
            problems += compare(table, rows, want, types, keys.get(table, KEYS))
    assert not problems, "\n".join(problems[:60])


def test_bars_view_equals_bars_from_the_raw_trades(run):
    """bars.ohlcv, every interval and column, against bars built from raw trades and books."""
    problems = []
    with warehouse(run) as con:
        types = numeric_columns(con)["bars.ohlcv"]
        for d in instrument_days(run):
            for interval, seconds in INTERVALS.items():
                want = {(str(r["bar_start"]),): r for r in ref.bars(d, seconds * 10**9)}
                rows = con.execute(
                    "SELECT *, epoch_ns(bar_start) AS start_ns, epoch_ns(book_time) AS book_ns FROM bars.ohlcv"
                    " WHERE dt = ? AND exchange = ? AND symbol = ? AND interval = ?",
                    [d.day, d.exchange, d.symbol, interval],
                ).pl()
                rows = rows.with_columns(pl.col("start_ns").cast(pl.String).alias("bar_start"))
                problems += compare(f"bars.ohlcv {interval}", rows, want, types, ("bar_start",))
                assert rows["book_ns"].to_list() == [want[(k,)]["book_time"] for k in rows["bar_start"]]
    assert not problems, "\n".join(problems[:60])


def _file_figures(path: Path, column: str) -> tuple:
    """(count, sum, min, max) of a decimal column by pyarrow (its decimal sum is exact)."""
    values = pq.read_table(path, columns=[column])[column]
    values = values.cast(pa.decimal128(38, values.type.scale))  # Parquet's small decimals read as decimal64
    extremes = pc.min_max(values)
    return tuple(f.as_py() for f in (pc.count(values), pc.sum(values), extremes["min"], extremes["max"]))


def _holds(view_type: str, file_type: pa.DataType) -> bool:
    """Whether the view's DuckDB type holds every value of the file's type exactly."""
    if pa.types.is_decimal(file_type):
        precision, scale = (int(n) for n in view_type.removeprefix("DECIMAL(").removesuffix(")").split(","))
        return scale >= file_type.scale and precision - scale >= file_type.precision - file_type.scale
    return {"BIGINT": pa.int64(), "DOUBLE": pa.float64(), "INTEGER": pa.int32()}.get(view_type) == file_type


def test_views_return_each_lake_file_exactly(run):
    """Every numeric column of every view has a type that holds each lake file's values exactly, and
    for decimals the count, sum, minimum and maximum through the view, per instrument-day file,
    equal the file's own (read by pyarrow): a view that rounds a decimal changes its sum."""
    settings = run["settings"]
    roots = {
        "raw.trades": settings.lake_dir / "raw" / "trades",
        "raw.book": settings.lake_dir / "raw" / "book",
        "raw.book_delta_v2": settings.lake_dir / "raw" / "book_delta_v2",
        "books.reconstructed_books": settings.lake_dir / "books",
        "books.vendor_agreement": settings.lake_dir / "book_agreement",
        "bars.ohlcv": settings.lake_dir / "bars",
    }
    problems = []
    with warehouse(run) as con:
        views = numeric_columns(con)
        assert {v for v in views if not v.startswith("main.")} == set(roots)
        for view, root in roots.items():
            files = sorted(root.rglob("*.parquet"))
            assert len(files) == 4, (view, files)
            columns = views[view]
            decimals = [c for c, t in columns.items() if t.startswith("DECIMAL")]
            figures = ", ".join(f'count("{c}"), sum("{c}"), min("{c}"), max("{c}")' for c in decimals)
            for path in files:
                schema = pq.read_schema(path)
                problems += [
                    f"{view}.{c} is {t}, {path} has {schema.field(c).type}"
                    for c, t in columns.items()
                    if c in schema.names and not _holds(t, schema.field(c).type)
                ]
                if not decimals:
                    continue
                exchange, symbol, day = (p.split("=", 1)[1] for p in path.parent.parts[-3:])
                got = con.execute(
                    f"SELECT {figures} FROM {view} WHERE exchange = ? AND symbol = ? AND dt = ?",
                    [exchange, symbol, dt.date.fromisoformat(day)],
                ).fetchone()
                for i, column in enumerate(decimals):
                    through_view, in_file = got[4 * i : 4 * i + 4], _file_figures(path, column)
                    if through_view != in_file:
                        problems.append(f"{view}.{column} {path.parent}: view {through_view}, file {in_file}")
    assert not problems, "\n".join(problems[:60])

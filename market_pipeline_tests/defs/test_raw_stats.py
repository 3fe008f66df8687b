"""The raw import's one pass: day statistics beside each day, lossless duplicate drops, and the raw
checks that read the statistics (duplicates, rows outside the day, origin times, out-of-order trades)."""

from __future__ import annotations

import base64
import datetime as dt
import json
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from market_pipeline.core.day_clock import day_start_ns
from market_pipeline_tests.support.skew_reference import skew_buckets
from market_pipeline_tests.support.vendor_lake import NS, VendorLake, vendor_frame

DAY = dt.date(2024, 3, 1)
T0 = day_start_ns(DAY)
EXCHANGE, SYMBOL = "BINANCE", "BTC-USDT"
KEY = f"{EXCHANGE}:{SYMBOL}"
MASTER_KEY = base64.b64encode(bytes(range(32))).decode()


def _settings(monkeypatch: pytest.MonkeyPatch, **env: str):
    from market_pipeline.settings import load_settings

    for name, value in {"PIPELINE_INSTRUMENTS": KEY, "PIPELINE_START_DATE": "2024-01-01", **env}.items():
        monkeypatch.setenv(name, value)
    return load_settings()


# Every fault the day statistics measure, on a synthetic day at 2% of the realistic size.
DAY_FAULTS = {
    "DROPPED_MESSAGES": "2",
    "OUT_OF_ORDER_ROWS": "1",
    "CLOCK_SKEW_EPISODES": "2",
    "OFF_GRID_PRICES": "2",
    "FLOAT_NOISE_PRICES": "2",
    "DUPLICATED_ROWS": "3",
}


def _faulted_day(monkeypatch: pytest.MonkeyPatch):
    faults = {f"PIPELINE_SYNTHETIC__FAULTS__{name}": value for name, value in DAY_FAULTS.items()}
    return _settings(monkeypatch, PIPELINE_SYNTHETIC__SCALE="0.02", **faults)


def _import(settings, table: str, day: dt.date = DAY):
    from market_pipeline.defs.common.importer import import_partition
    from market_pipeline.vendors.registry import build_source

    return import_partition(build_source(settings), settings, table, settings.universe[0], day, "run-1")


@pytest.fixture
def local(vendor_lake: VendorLake, data_dir: Path, monkeypatch: pytest.MonkeyPatch):
    """A local vendor lake of one instrument-day; tests rewrite its files before importing."""
    vendor_lake(days=[DAY], instruments=[(EXCHANGE, SYMBOL)], rows=40, spelling="client")
    monkeypatch.setenv("PIPELINE_SOURCE", "local")
    monkeypatch.setenv("PIPELINE_LOCAL_DIR", str(vendor_lake.root))
    return SimpleNamespace(lake=vendor_lake, settings=lambda **env: _settings(monkeypatch, **env))


def _rewrite(local, table: str, frame: pl.DataFrame) -> None:
    frame.write_parquet(local.lake.path(table, EXCHANGE, SYMBOL, DAY))


def _evaluate(check_name: str, asset: str, settings, context=None):
    from market_pipeline.defs.raw.checks import RAW_CHECKS

    check = next(c for c in RAW_CHECKS if c.name == check_name and c.asset_key.to_user_string() == asset)
    return check.evaluate(context, settings, settings.universe[0], DAY)


# ---------------------------------------------------------------------------------------
# Duplicates (#12.2)
# ---------------------------------------------------------------------------------------


def test_exact_duplicate_trades_are_dropped_and_conflicting_ids_kept(local):
    trades = vendor_frame("trades", DAY, 40)
    conflicting = trades[7].with_columns(pl.col("quantity") * 2)  # same id, another quantity
    doubled = pl.concat([trades[:20], trades[3], trades[20:30], trades[11], conflicting, trades[30:]])
    _rewrite(local, "trades", doubled)
    settings = local.settings()
    stats = _import(settings, "trades")
    assert (stats.duplicate_rows, stats.duplicate_rows_dropped, stats.conflicting_trade_ids) == (2, 2, 1)
    stored = pl.read_parquet(stats.path)
    assert stored.height == doubled.height - 2 == stats.rows
    assert stored.equals(pl.concat([trades[:30], conflicting, trades[30:]]))

    finding = _evaluate("duplicate_rows", "raw_trades", settings)
    assert finding.severity.value == "WARN"
    assert finding.figures["duplicate_rows"] == 2 and finding.figures["conflicting_trade_ids"] == 1
    assert {r["trade_id"] for r in finding.worst_rows} == {
        trades["trade_id"][3],
        trades["trade_id"][11],
        trades["trade_id"][7],
    }


def test_duplicate_share_threshold_from_config(local):
    trades = vendor_frame("trades", DAY, 40)
    _rewrite(local, "trades", pl.concat([trades, trades[5]]))
    settings = local.settings(PIPELINE_CHECKS__DUPLICATE_ROWS_MAX_SHARE="0.05")
    _import(settings, "trades")
    finding = _evaluate("duplicate_rows", "raw_trades", settings)
    assert finding.severity is None and finding.figures["duplicate_rows"] == 1


def test_adjacent_duplicate_delta_rows_dropped_other_repeats_kept(local):
    deltas = vendor_frame("book_delta_v2", DAY, 40)
    # One message of three rows (same received_time and sequence number): A B A.
    message = deltas[10:13].with_columns(
        pl.lit(deltas["received_time"][10], pl.Int64).alias("received_time"),
        pl.lit(deltas["origin_time"][10], pl.Int64).alias("origin_time"),
        pl.lit(deltas["sequence_number"][10], pl.Int64).alias("sequence_number"),
    )
    a, b = message[0], message[1]
    faulty = pl.concat([deltas[:10], a, a, b, a, deltas[13:]])
    _rewrite(local, "book_delta_v2", faulty)
    settings = local.settings()
    stats = _import(settings, "book_delta_v2")
    assert (stats.duplicate_rows, stats.duplicate_rows_dropped) == (2, 1)  # the second A dropped, the third kept
    stored = pl.read_parquet(stats.path)
    assert stored.equals(pl.concat([deltas[:10], a, b, a, deltas[13:]]))
    finding = _evaluate("duplicate_rows", "raw_book_deltas", settings)
    assert finding.severity.value == "WARN"
    assert sorted(r["dropped"] for r in finding.worst_rows) == [False, True]


def test_duplicate_snapshot_row_dropped(local):
    book = vendor_frame("book", DAY, 12)
    _rewrite(local, "book", pl.concat([book[:5], book[4], book[5:]]))
    settings = local.settings()
    stats = _import(settings, "book")
    assert (stats.duplicate_rows, stats.duplicate_rows_dropped, stats.rows) == (1, 1, 12)
    assert pl.read_parquet(stats.path).equals(book)
    assert _evaluate("duplicate_rows", "raw_book_snapshots", settings).severity.value == "WARN"


def test_duplicates_in_materialization_metadata(local, instance, data_dir: Path):
    import dagster as dg

    from market_pipeline_tests.support.dagster_instance import assets_named, code_location, range_tags

    trades = vendor_frame("trades", DAY, 40)
    _rewrite(local, "trades", pl.concat([trades, trades[5], trades[6]]))
    local.settings()
    defs = code_location()
    result = dg.materialize(
        assets_named(defs, "raw_trades"),
        instance=instance,
        resources=defs.resources,
        tags=range_tags(DAY.isoformat(), DAY.isoformat()),
    )
    mat = result.asset_materializations_for_node("raw_trades")[0]
    assert mat.metadata["duplicate_rows"].value == 2
    assert mat.metadata["duplicate_rows_dropped"].value == 2
    assert mat.metadata[f"{KEY} detail"].value["duplicate_rows"] == 2


# ---------------------------------------------------------------------------------------
# Rows outside the day and origin times (#12.3)
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("table", "asset"), [("trades", "raw_trades"), ("book", "raw_book_snapshots")])
def test_rows_outside_the_day_reported_on_every_table(local, table: str, asset: str):
    frame = vendor_frame(table, DAY, 20)
    late = pl.col("received_time") + 2 * 86_400 * NS
    frame = frame.with_columns(
        pl.when(pl.int_range(pl.len()).is_in([3, 4]))
        .then(late)
        .otherwise(pl.col("received_time"))
        .alias("received_time")
    )
    _rewrite(local, table, frame)
    settings = local.settings()
    stats = _import(settings, table)
    assert (stats.quarantined_rows, stats.quarantined_outside_day) == (2, 2)
    finding = _evaluate("schema_and_row_counts", asset, settings)
    assert finding.severity.value == "WARN"
    assert finding.figures["quarantined_rows"] == 2 and finding.figures["quarantined_outside_day"] == 2
    assert finding.figures["rows"] == 18


def test_rows_within_tolerance_counted_outside_the_day(local):
    frame = vendor_frame("trades", DAY, 20)
    frame = frame.with_columns(
        pl.when(pl.int_range(pl.len()) == 19)
        .then(T0 + 86_400 * NS + 60 * NS)
        .otherwise(pl.col("received_time"))
        .alias("received_time")
    )
    _rewrite(local, "trades", frame)
    settings = local.settings()
    stats = _import(settings, "trades")
    assert (stats.quarantined_rows, stats.rows_outside_day) == (0, 1)
    finding = _evaluate("schema_and_row_counts", "raw_trades", settings)
    assert finding.severity is None and finding.figures["rows_outside_day"] == 1


@pytest.mark.parametrize(
    ("table", "asset"), [("trades", "raw_trades"), ("book", "raw_book_snapshots"), ("book_delta_v2", "raw_book_deltas")]
)
def test_origin_time_outside_the_day_beyond_tolerance(local, table: str, asset: str):
    """A row whose exchange time lies beyond the partition tolerance is quarantined like a row
    received on another day (issue 29, item 6: it used to stay and feed the bars); one within it
    stays, and the origin_time check errs for it only with a tighter tolerance of its own."""
    frame = vendor_frame(table, DAY, 30)
    minutes = 60 * NS
    shifted = {5: -90 * minutes, 6: -30 * minutes}  # 90 min before the day: beyond 60; 30 min: within
    origin = pl.col("origin_time")
    for row, shift in shifted.items():
        origin = pl.when(pl.int_range(pl.len()) == row).then(T0 + shift).otherwise(origin)
    _rewrite(local, table, frame.with_columns(origin.alias("origin_time")))
    settings = local.settings()
    stats = _import(settings, table)
    assert (stats.quarantined_rows, stats.quarantined_outside_day) == (1, 1)
    finding = _evaluate("origin_time", asset, settings)
    assert finding.severity is None
    assert finding.figures["origin_outside_day"] == 1 and finding.figures["origin_beyond_tolerance"] == 0
    tighter = local.settings(PIPELINE_CHECKS__ORIGIN_TIME_TOLERANCE_MINUTES="20")
    assert _evaluate("origin_time", asset, tighter).severity.value == "ERROR"


def test_received_before_origin_is_an_origin_time_error(local):
    frame = vendor_frame("trades", DAY, 30).with_columns(
        pl.when(pl.int_range(pl.len()) == 8)
        .then(pl.col("received_time") + 2 * NS)
        .otherwise(pl.col("origin_time"))
        .alias("origin_time")
    )
    _rewrite(local, "trades", frame)
    settings = local.settings()
    _import(settings, "trades")
    finding = _evaluate("origin_time", "raw_trades", settings)
    assert finding.severity.value == "ERROR"
    assert finding.figures["received_before_origin_beyond_tolerance"] == 1
    assert finding.figures["skew_min_ms"] == pytest.approx(-2000.0)


# ---------------------------------------------------------------------------------------
# Out-of-order trades (#12.5)
# ---------------------------------------------------------------------------------------


def test_out_of_order_trades_flagged(local):
    trades = vendor_frame("trades", DAY, 30)
    # Rows 10 and 11 swapped: 11 comes first, so 10 is received before (and numbered below) it.
    order = list(range(10)) + [11, 10] + list(range(12, 30))
    _rewrite(local, "trades", trades[order])
    settings = local.settings()
    stats = _import(settings, "trades")
    assert stats.out_of_order_rows == 1
    finding = _evaluate("out_of_order_trades", "raw_trades", settings)
    assert finding.severity.value == "WARN"
    assert finding.figures["out_of_order_received"] == 1 and finding.figures["out_of_order_trade_ids"] == 1
    assert {r["trade_id"] for r in finding.worst_rows} == {trades["trade_id"][10]}


def test_in_order_trades_pass_and_text_ids_are_not_compared(local):
    trades = vendor_frame("trades", DAY, 30).with_columns(("t-" + pl.col("trade_id")).alias("trade_id"))
    _rewrite(local, "trades", trades)
    settings = local.settings()
    _import(settings, "trades")
    finding = _evaluate("out_of_order_trades", "raw_trades", settings)
    assert finding.severity is None and finding.figures["out_of_order_trade_ids"] is None


# ---------------------------------------------------------------------------------------
# The statistics themselves
# ---------------------------------------------------------------------------------------


def test_stats_layout_and_recomputed_when_stale(local, data_dir: Path):
    from market_pipeline.core.lake.paths import stats_partition_dir
    from market_pipeline.core.quality.lake_day import read_day_stats
    from market_pipeline.defs.common.checks import day_files

    settings = local.settings()
    stats = _import(settings, "book_delta_v2")
    directory = stats_partition_dir(settings.lake_dir, "book_delta_v2", EXCHANGE, SYMBOL, DAY)
    assert (
        directory
        == data_dir / "lake" / "stats" / "book_delta_v2" / f"exchange={EXCHANGE}" / f"symbol={SYMBOL}" / f"dt={DAY}"
    )
    assert stats.stats_dir == directory
    assert sorted(p.name for p in directory.iterdir()) == sorted(
        [
            "summary.json",
            "hourly.parquet",
            "skew_histogram.parquet",
            "precision.parquet",
            "samples.parquet",
            "gaps.parquet",
            "origin_outside_day.parquet",
            "chain_breaks.parquet",
        ]
    )
    summary = json.loads((directory / "summary.json").read_text())
    assert summary["rows"] == 40 and summary["messages"] == 40
    files = day_files(settings, settings.universe[0], DAY)
    assert read_day_stats(files, "book_delta_v2").summary == summary
    # The lake file changed behind the statistics' back: they are recomputed from the file.
    pl.read_parquet(stats.path).head(25).write_parquet(stats.path)
    assert read_day_stats(files, "book_delta_v2").summary["rows"] == 25


def test_skew_quantiles_stored_once_and_made_again_when_the_day_changes(local, monkeypatch: pytest.MonkeyPatch):
    """The first measure of a day stores its exact skew quantiles beside the statistics and the
    next one reads them, not the deltas; a changed lake file or other statistics get their own."""
    from market_pipeline.core.lake.paths import stats_partition_dir
    from market_pipeline.core.quality import skew as skew_module
    from market_pipeline.core.quality.day_stats import SKEW_QUANTILES_FILE
    from market_pipeline.core.quality.lake_day import read_day_stats
    from market_pipeline.defs.common.checks import day_files
    from market_pipeline_tests.support import whole_day_reference as m

    settings = local.settings()
    imported = _import(settings, "book_delta_v2")
    stored = stats_partition_dir(settings.lake_dir, "book_delta_v2", EXCHANGE, SYMBOL, DAY) / SKEW_QUANTILES_FILE
    passes: list[Path] = []
    message_starts = skew_module.message_starts
    monkeypatch.setattr(skew_module, "message_starts", lambda path: passes.append(path) or message_starts(path))

    first = _evaluate("clock_skew", "raw_book_deltas", settings)
    assert stored.is_file() and passes == [imported.path]
    assert _evaluate("clock_skew", "raw_book_deltas", settings).figures == first.figures
    assert passes == [imported.path]

    # The lake file changed behind the statistics' back: the quantiles of the file as it is now.
    day = pl.read_parquet(imported.path).head(25)
    skews = (pl.int_range(pl.len(), dtype=pl.Int64) + 1) * 3_000_000  # 3, 6, ... 75 ms
    day.with_columns(
        (pl.col("received_time") - skews).cast(day.schema["origin_time"]).alias("origin_time")
    ).write_parquet(imported.path)
    changed = _evaluate("clock_skew", "raw_book_deltas", settings)
    assert passes == [imported.path] * 2
    whole = m.skew_messages(pl.read_parquet(imported.path)).select(m.skew_aggregates()).row(0, named=True)
    assert {k: changed.figures[k] for k in whole} == whole != {k: first.figures[k] for k in whole}

    # The day imported again: its own quantiles (the stored ones name the changed file).
    _import(settings, "book_delta_v2")
    assert _evaluate("clock_skew", "raw_book_deltas", settings).figures == first.figures
    assert passes == [imported.path] * 3

    # Statistics other than those the quantiles were stored with (e.g. a new import of rows that
    # kept the file's size): the deltas are read again.
    files = day_files(settings, settings.universe[0], DAY)
    stats = read_day_stats(files, "book_delta_v2")
    skew_module.skew_figures(files, stats)
    assert passes == [imported.path] * 3
    stats.summary["skew_max_ns"] = int(stats.summary["skew_max_ns"]) + 1
    skew_module.skew_figures(files, stats)
    assert passes == [imported.path] * 4


def test_stats_figures_agree_with_whole_day_readers(tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch):
    """On a faulted synthetic day the measures the checks and the reports share (built on the
    statistics) give the whole-day readers' figures: gaps, skew (quantiles included) and the
    listed off-grid values, exactly."""
    from market_pipeline.core.quality.gaps import repaired_gaps, snapshot_sequence
    from market_pipeline.core.quality.lake_day import read_day_stats
    from market_pipeline.core.quality.precision_figures import DELTA_VALUE_COLUMNS, tally_tables, worst_precision
    from market_pipeline.core.quality.skew import skew_figures
    from market_pipeline.defs.common.checks import day_files
    from market_pipeline_tests.support import whole_day_reference as m

    settings = _faulted_day(monkeypatch)
    _import(settings, "book")
    imported = _import(settings, "book_delta_v2")
    files = day_files(settings, settings.universe[0], DAY)
    stats = read_day_stats(files, "book_delta_v2")
    deltas = m.read_deltas(files)
    # The synthetic source's duplicated rows are adjacent copies: all three dropped on import.
    assert (imported.duplicate_rows, imported.duplicate_rows_dropped) == (3, 3)
    assert deltas.height == imported.rows

    tops = m.read_snapshot_tops(files)
    assert repaired_gaps(files, stats, snapshot_sequence(files)).equals(m.gaps(files, deltas, tops))

    skew = m.skew_messages(deltas)
    whole = skew.select(m.skew_aggregates()).row(0, named=True)
    figures = skew_figures(files, stats)
    assert figures.day == whole
    hourly = m.hourly_skew(skew, DAY)
    assert figures.hourly.select(hourly.columns).equals(hourly.cast(figures.hourly.select(hourly.columns).schema))

    flags = m.precision_flags(deltas, DELTA_VALUE_COLUMNS, settings.universe[0])
    assert stats.summary["off_grid_values"] == int(flags["off_grid"].sum()) == 2
    assert stats.summary["precision_loss_events"] == flags.height - 2
    assert worst_precision(tally_tables(files, {"book_delta_v2": stats}).frame()) == worst_precision(flags)


def test_day_statistics_do_not_depend_on_the_batches(data_dir: Path, monkeypatch: pytest.MonkeyPatch):
    """The import drops duplicates a batch ahead of the statistics, on a helper thread: cut into
    batches of 997 rows, a faulted day's statistics (samples and their day row numbers too) are
    those of its default batches, file for file."""
    from market_pipeline.core.lake import ingest

    settings = _faulted_day(monkeypatch)
    whole = _import(settings, "book_delta_v2")
    assert whole.rows > 20 * 997
    expected = (_stats_tree(data_dir), _summaries(data_dir))
    monkeypatch.setattr(ingest, "batch_rows_for", lambda columns: 997)
    cut = _import(settings, "book_delta_v2")
    assert (cut.rows, cut.duplicate_rows_dropped) == (whole.rows, 3)
    assert (_stats_tree(data_dir), _summaries(data_dir)) == expected


def test_reimport_writes_identical_bytes(local, data_dir: Path):
    from market_pipeline_tests.support.files import sha256_tree

    trades = vendor_frame("trades", DAY, 40)
    _rewrite(local, "trades", pl.concat([trades, trades[5]]))
    settings = local.settings()
    for table in ("trades", "book", "book_delta_v2"):
        _import(settings, table)
    before = sha256_tree(data_dir / "lake")
    assert len([p for p in before if p.startswith("stats/")]) == 3 * 8
    for table in ("trades", "book", "book_delta_v2"):
        _import(settings, table)
    assert sha256_tree(data_dir / "lake") == before


def _stats_tree(data_dir: Path) -> dict[str, str]:
    """sha256 of every day statistics file but the summary, whose `data_bytes` is the partition's size."""
    from market_pipeline_tests.support.files import sha256_tree

    return {k: v for k, v in sha256_tree(data_dir / "lake" / "stats").items() if not k.endswith("summary.json")}


def _summaries(data_dir: Path) -> list[dict]:
    summaries = sorted((data_dir / "lake" / "stats").rglob("summary.json"))
    return [{k: v for k, v in json.loads(p.read_text()).items() if k != "data_bytes"} for p in summaries]


def test_a_file_in_the_lake_encoding_becomes_the_partition_as_it_is(local, data_dir: Path):
    """A vendor file already encoded as a raw partition and of the lake's schema (a Tardis or capture
    cache table: `ingest.in_raw_encoding`) is measured without being encoded again and becomes the
    partition as it is, with the statistics, rows and checks the encoding import gives. A file whose
    import drops or sets aside a row, or a lake that is encrypted, is encoded as any other."""
    from market_pipeline.core import context
    from market_pipeline.core.lake import parquet_io
    from market_pipeline.core.lake.ingest import RAW_ENCODING_KEY, write_cache_table
    from market_pipeline.core.lake.paths import PARTITION_FILE, raw_partition_dir

    tables = ("trades", "book", "book_delta_v2")
    settings = local.settings()
    lake = {t: raw_partition_dir(settings.lake_dir, t, EXCHANGE, SYMBOL, DAY) / PARTITION_FILE for t in tables}
    encoded = {t: _import(settings, t) for t in tables}  # from the vendor's own files: encoded
    rows = {t: pl.read_parquet(lake[t]) for t in tables}
    stats, summaries = _stats_tree(data_dir), _summaries(data_dir)
    assert all(_marked(lake[t], RAW_ENCODING_KEY) for t in tables)

    for table in tables:  # the vendor's files become files in the lake's encoding (as a cache's are)
        vendor_file = local.lake.path(table, EXCHANGE, SYMBOL, DAY)
        write_cache_table([rows[table].slice(0, 25), rows[table].slice(25)], rows[table].schema, vendor_file)
        taken = _import(settings, table)
        assert lake[table].read_bytes() == vendor_file.read_bytes()  # the file as it is, copied
        assert not lake[table].samefile(vendor_file)  # the user's own file is not shared by a link
        assert pl.read_parquet(lake[table]).equals(rows[table])
        assert (taken.rows, taken.bytes) == (encoded[table].rows, vendor_file.stat().st_size)
    assert _stats_tree(data_dir) == stats
    assert _summaries(data_dir) == summaries
    finding = _evaluate("duplicate_rows", "raw_book_deltas", settings)
    assert finding.severity is None and finding.figures["duplicate_rows"] == 0

    # A duplicate delta row to drop and a trade to set aside: encoded, the rows the import keeps.
    deltas, trades = rows["book_delta_v2"], rows["trades"]
    doubled = pl.concat([deltas[:10], deltas[9], deltas[10:]])
    write_cache_table([doubled], doubled.schema, local.lake.path("book_delta_v2", EXCHANGE, SYMBOL, DAY))
    bad_trade = trades.with_columns(pl.when(pl.int_range(pl.len()) == 3).then(-1.0).otherwise("price").alias("price"))
    write_cache_table([bad_trade], bad_trade.schema, local.lake.path("trades", EXCHANGE, SYMBOL, DAY))
    again = {t: _import(settings, t) for t in ("book_delta_v2", "trades")}
    assert (again["book_delta_v2"].rows, again["book_delta_v2"].duplicate_rows_dropped) == (deltas.height, 1)
    assert pl.read_parquet(lake["book_delta_v2"]).equals(deltas)
    assert (again["trades"].rows, again["trades"].quarantined_rows) == (trades.height - 1, 1)
    assert pl.read_parquet(lake["trades"]).equals(pl.concat([trades[:3], trades[4:]]))

    # An encrypted lake encrypts its partitions, whatever the vendor file's encoding.
    lake["book"].unlink()  # a lake is encrypted whole or not at all
    with context.using(context.CoreContext(master_key=MASTER_KEY, lake_encrypted=True)):
        assert _import(settings, "book").rows == rows["book"].height
        assert parquet_io.read_frame(lake["book"]).equals(rows["book"])
    with pytest.raises(pl.exceptions.ComputeError, match="encrypted footer"):
        pl.read_parquet(lake["book"])


def _marked(path: Path, key: bytes) -> bool:
    import pyarrow.parquet as pq

    return key in (pq.read_schema(path).metadata or {})


@pytest.mark.parametrize("seed", range(5))
def test_repeated_rows_equal_polars_distinctness(seed: int):
    """The import's duplicate pass (a numba row hash, then an exact comparison of the rows whose
    hash repeats) marks exactly the rows polars finds equal to an earlier row, and its adjacency
    is polars' `eq_missing` with the row before, nulls, NaN and -0.0 included, also across a batch
    boundary (a lead row) and for a batch of one row."""
    from market_pipeline.core.quality.row_keys import repeated_rows, row_marks

    rng = np.random.default_rng(seed)
    n = 2_000
    floats = rng.choice([0.0, -0.0, np.nan, -np.nan, 1.5, 2.25, 1e300], n)
    frame = pl.DataFrame(
        {
            "time": rng.integers(0, 40, n) + 1_709_251_200_000_000_000,
            "price": pl.Series(floats).set(pl.Series(rng.random(n) < 0.1), None),
            "size": rng.choice([0.5, 1.0], n),
            "count": pl.Series(rng.integers(0, 2, n)).set(pl.Series(rng.random(n) < 0.1), None),
            "side_is_bid": pl.Series(rng.random(n) < 0.5).set(pl.Series(rng.random(n) < 0.05), None),
            "note": rng.choice(["a", "b"], n),
        }
    )
    frame = frame[np.sort(np.r_[np.arange(n), rng.choice(n, 300)])]  # adjacent copies as well
    expected = ~frame.select(pl.struct(frame.columns).is_first_distinct()).to_series().to_numpy()
    same = pl.all_horizontal([pl.col(c).eq_missing(pl.col(c).shift(1)) for c in frame.columns]).fill_null(False)
    adjacent = frame.select(same).to_series().to_numpy()
    assert expected.sum() > 100 and adjacent.sum() > 100  # the frame has plenty of repeats
    hashes, ours = row_marks(frame)
    np.testing.assert_array_equal(repeated_rows(frame, hashes), expected)
    np.testing.assert_array_equal(ours, adjacent)
    for cut in (1, 2, 777, frame.height - 1):  # the lead row is the last row before the batch
        lead, batch = frame.slice(cut - 1, 1), frame.slice(cut, 1 if cut == 777 else None)
        hashes, ours = row_marks(batch, lead)
        np.testing.assert_array_equal(hashes, row_marks(frame.slice(cut - 1, batch.height + 1))[0])
        np.testing.assert_array_equal(ours, adjacent[cut - 1 : cut + batch.height] & [False] + [True] * batch.height)
    # Hashed by one column only (as a wide table is, by its identity columns), the marks are the
    # same: rows equal to another in it are compared in every column.
    hashes, ours = row_marks(frame, keys=["time"])
    np.testing.assert_array_equal(repeated_rows(frame, hashes), expected)
    np.testing.assert_array_equal(ours, adjacent)
    lead, batch = frame.slice(776, 1), frame.slice(777)
    np.testing.assert_array_equal(row_marks(batch, lead, ["time"])[1], adjacent[776:] & [False] + [True] * batch.height)
    # Values polars takes as equal hash alike; -0.0 and NaN equal their neighbours.
    zeros = pl.DataFrame({"x": [0.0, -0.0, float("nan"), -float("nan"), None, None]})
    h, ours = row_marks(zeros)
    assert h[0] == h[1] and h[2] == h[3] and h[4] == h[5]
    assert ours.tolist() == [False, True, False, True, False, True]


def test_snapshot_rows_are_hashed_by_what_tells_them_apart():
    """Snapshot rows by their times, sequence number and touch."""
    from market_pipeline.core.quality.duplicate_rows import identity_columns

    columns = ["origin_time", "received_time", "sequence_number", "bid_0_price", "bid_0_size", "ask_0_price"]
    columns += ["bid_1_price", "ask_1_size", "bid_19_price", "ask_19_size", "line_no"]
    assert identity_columns(columns) == columns[:6] + ["line_no"]


@pytest.mark.parametrize(("seed", "sides"), [(0, False), (1, False), (2, True), (3, True)])
def test_repeats_in_messages_equal_polars_distinctness_per_message(seed: int, sides: bool):
    """The delta import's repeats: exactly the rows polars finds equal to an earlier row of the
    same message (a run sharing received_time and sequence_number), in short messages (compared
    pair by pair) and long ones (sorted), with and without a side, nulls, NaN and -0.0 among the
    values; a message that comes again later is no repeat. Its adjacency is polars' `eq_missing`
    with the row before."""
    from market_pipeline.core.quality.row_keys import message_repeats

    rng = np.random.default_rng(seed)
    lengths = np.r_[rng.integers(1, 6, 400), rng.integers(17, 60, 10)]
    rng.shuffle(lengths)
    keys = np.repeat(np.arange(len(lengths)), lengths)
    n = len(keys)
    columns = {
        "received_time": T0 + keys // 2,  # neighbouring messages share a time, not a number
        "sequence_number": keys,
        "price": pl.Series(rng.choice([1.5, 2.0, np.nan, -np.nan, 0.0, -0.0], n)).set(
            pl.Series(rng.random(n) < 0.05), None
        ),
        "size": pl.Series(rng.choice([0.5, 1.0], n)).set(pl.Series(rng.random(n) < 0.1), None),
    }
    if sides:
        columns["side_is_bid"] = pl.Series(rng.random(n) < 0.5).set(pl.Series(rng.random(n) < 0.05), None)
    frame = pl.DataFrame(columns)
    frame = frame[np.sort(np.r_[np.arange(n), rng.choice(n, 100)])]  # adjacent copies as well
    frame = pl.concat([frame, frame.head(lengths[0])])  # the first message again, at the end
    new_key = (pl.col("received_time").diff() != 0) | (pl.col("sequence_number").diff() != 0)
    message = frame.select(new_key.fill_null(False).cum_sum()).to_series()
    expected = ~frame.with_columns(message.alias("m")).select(pl.struct(pl.all()).is_first_distinct()).to_series()
    same = pl.all_horizontal([pl.col(c).eq_missing(pl.col(c).shift(1)) for c in frame.columns]).fill_null(False)
    adjacent = frame.select(same).to_series().to_numpy()
    assert expected.sum() > 100 and adjacent.sum() > 50 and (message.value_counts()["count"] > 16).any()
    # The message sent again is a run of its own: repeats within it, none of the first copy.
    assert expected[-lengths[0] :].to_list() == expected[: lengths[0]].to_list()
    ours_adjacent, ours = message_repeats(frame)
    np.testing.assert_array_equal(ours, expected.to_numpy())
    np.testing.assert_array_equal(ours_adjacent, adjacent)
    # Split in two chunks inside a message, as `batches.message_aligned` glues batches.
    cut = int(lengths[:3].sum()) + 1
    whole = frame.rechunk()
    glued = pl.concat([whole.slice(0, cut), whole.slice(cut)], rechunk=False)
    assert glued.n_chunks() == 2
    np.testing.assert_array_equal(message_repeats(glued)[1], expected.to_numpy())


def test_delta_batches_must_start_a_message():
    """A delta batch that continues the message the batch before ended in is refused: its rows
    could equal rows of the batch before, which the duplicate, skew and gap passes do not see."""
    from market_pipeline.core.quality.day_stats_builder import DayStatsBuilder

    rows = pl.DataFrame(
        {
            "origin_time": [T0, T0, T0 + 1],
            "received_time": [T0, T0, T0 + 1],
            "sequence_number": [1, 1, 2],
            "side_is_bid": True,
            "price": 1.0,
            "size": 0.5,
        }
    )
    builder = DayStatsBuilder("book_delta_v2", DAY, Decimal("0.01"), Decimal("0.001"))
    assert builder.add(rows.slice(0, 1)).height == 1
    with pytest.raises(ValueError, match="starts inside the message"):
        builder.add(rows.slice(1))
    assert builder.add(rows.slice(2)).height == 1  # a batch starting the next message is taken


@pytest.mark.parametrize("seed", range(4))
def test_skew_pass_equals_polars(seed: int):
    """The one-pass skew kernel gives what polars group_bys and `skew_buckets` give: per-hour
    rows, messages, min/max/negative, the histogram and the day's largest skews with their times
    (first row on a tie), with |skew| beyond float64's 53 bits, hours clipped to the day, a batch
    of one row and a batch that continues the message before it."""
    from market_pipeline.core.quality.day_stats import HISTOGRAM_SCHEMA, HOURLY_SCHEMA
    from market_pipeline.core.quality.skew_pass import NS_PER_HOUR, TOP, SkewPass

    rng = np.random.default_rng(seed)
    n = 3_000
    received = np.sort(T0 + rng.integers(-NS_PER_HOUR, 25 * NS_PER_HOUR, n))
    received[100:140] = received[100]  # one long message
    sequence = np.cumsum(rng.integers(0, 2, n))
    skew = rng.choice(
        [0, 1, -1, 1023, 1024, -1025, 2**53 + 1, 2**60 - 1, -(2**62) - 3, 3_000_000, -3_000_000, 7], n
    ) + rng.integers(-3, 3, n)
    origin = received - skew
    frame = pl.DataFrame({"received_time": received, "origin_time": origin, "sequence_number": sequence})
    for keyed, cuts in ((True, (0, 1, 2, 100, 120, 2_000, n)), (False, (0, 1, 1_500, n))):
        ours = SkewPass(T0)
        for a, b in zip(cuts[:-1], cuts[1:], strict=True):
            first_new = a == 0 or (received[a], sequence[a]) != (received[a - 1], sequence[a - 1])
            # A batch in two chunks (glued by ingest.message_aligned), the cut inside a message.
            parts = [slice(a, (a + b) // 2), slice((a + b) // 2, b)] if b - a > 1 else [slice(a, b)]
            ours.add(
                [received[p] for p in parts],
                [origin[p] for p in parts],
                [sequence[p] for p in parts] if keyed else None,
                keyed,
                first_new,
                a,
            )
        key = (pl.col("received_time") != pl.col("received_time").shift(1)) | (
            pl.col("sequence_number") != pl.col("sequence_number").shift(1)
        )
        hour = ((pl.col("received_time") - T0) // NS_PER_HOUR).clip(0, 23).cast(pl.Int32).alias("hour")
        rows = frame.with_columns(
            hour,
            (key.fill_null(True) if keyed else pl.lit(True)).alias("new"),
            (pl.col("received_time") - pl.col("origin_time")).alias("skew_ns"),
            pl.int_range(pl.len()).alias("row"),
        )
        messages = rows.filter("new")
        hourly = (
            rows.group_by("hour")
            .agg(pl.len().alias("rows"))
            .join(
                messages.group_by("hour").agg(
                    pl.len().alias("messages"),
                    pl.col("skew_ns").min().alias("skew_min_ns"),
                    pl.col("skew_ns").max().alias("skew_max_ns"),
                    (pl.col("skew_ns") < 0).sum().alias("skew_negative"),
                ),
                on="hour",
                how="left",
            )
            .with_columns(pl.col("messages", "skew_negative").fill_null(0))
            .sort("hour")
            .cast(HOURLY_SCHEMA)
            .select(list(HOURLY_SCHEMA))
        )
        assert_frame_equal(ours.hourly(HOURLY_SCHEMA), hourly)
        bucket, width = skew_buckets(messages["skew_ns"].to_numpy())
        histogram = (
            messages.select("hour", pl.Series("bucket_ns", bucket), pl.Series("width_ns", width))
            .group_by("hour", "bucket_ns", "width_ns")
            .agg(pl.len().alias("count"))
            .sort("hour", "bucket_ns")
            .cast(HISTOGRAM_SCHEMA)
        )
        assert_frame_equal(ours.histogram_frame(HISTOGRAM_SCHEMA), histogram)
        best = messages.sort(pl.col("skew_ns").abs(), pl.col("row"), descending=[True, False]).head(TOP)
        worst = ours.worst()
        assert worst.rows.tolist() == best["row"].to_list()
        assert worst.received_time.tolist() == best["received_time"].to_list()
        assert worst.origin_time.tolist() == best["origin_time"].to_list()
        assert worst.sequence_number.tolist() == (best["sequence_number"].to_list() if keyed else [0] * TOP)


@pytest.mark.parametrize("rooms", [(10, 10), (3, 0), (0, 2), (0, 0)])
def test_grid_tally_counts_and_locates_what_grid_flags_flags(rooms: tuple[int, int]):
    """The statistics' grid test counted in one pass per chunk (`grid_tally`) gives `grid_flags`'
    counts and its first flagged rows of each kind, up to the room left, across chunk cuts."""
    from market_pipeline.core.quality.precision import grid_flags, grid_tally

    rng = np.random.default_rng(5)
    step = Decimal("0.01")
    values = rng.integers(1, 10**7, 5_000) / 100  # on the grid, each the nearest float
    noisy = rng.choice(5_000, 40, replace=False)
    values[noisy[:25]] += 1e-9  # on the grid, not the nearest float: precision loss
    values[noisy[25:]] += 0.003  # off the grid
    values[7] = np.nan
    off_grid, loss = grid_flags(values, step)
    assert (off_grid.sum(), loss.sum()) == (15, 25)
    for cuts in ([], [1, 2, 2_500], list(range(100, 5_000, 100))):
        tally = grid_tally(np.split(values, cuts), step, *rooms)
        assert (tally.off_grid, tally.precision_loss) == (15, 25)
        assert tally.off_grid_rows.tolist() == np.flatnonzero(off_grid)[: rooms[0]].tolist()
        assert tally.precision_loss_rows.tolist() == np.flatnonzero(loss)[: rooms[1]].tolist()


def test_seen_values_return_each_new_value_once():
    """The day's price set (a numba hash table that grows) hands back the values polars finds
    new against every earlier batch: nulls skipped, runs, -0.0, NaN, thousands of values."""
    from polars.testing import assert_series_equal

    from market_pipeline.core.quality.precision import SeenValues, max_decimals

    rng = np.random.default_rng(5)
    seen, earlier = SeenValues(), pl.Series("price", [], pl.Float64)
    for size in (1, 0, 5_000, 20_000, 3):
        prices = np.round(rng.choice(rng.uniform(1, 100, 6_000), size), 2)
        batch = pl.Series("price", np.repeat(prices, rng.integers(1, 3, size)))  # runs of one value
        batch = pl.concat([batch, pl.Series("price", [None, 0.0, -0.0, float("nan"), None], pl.Float64)])
        new = seen.add(batch)
        expected = batch.drop_nulls().unique()
        expected = expected.filter(~expected.is_in(earlier.implode()))
        earlier = pl.concat([earlier, expected])
        assert new.null_count() == 0 and len(new) <= len(expected) + 1  # -0.0 may come back beside 0.0
        assert_series_equal(new.unique().sort(), expected.sort())
        assert max_decimals(new) == max_decimals(expected)


@pytest.mark.parametrize("contiguous", [True, False])
def test_gap_rows_equal_polars_gap_messages(contiguous: bool):
    """The batch pass over message starts finds the gap events `sequence.gap_messages` finds
    over the whole day's messages (out of order, jumps), whatever the batch cuts."""
    from market_pipeline.core.quality.sequence import gap_messages, gap_rows
    from market_pipeline_tests.support.whole_day_reference import messages

    rng = np.random.default_rng(11)
    n = 4_000
    sequence = np.cumsum(rng.choice([0, 0, 1, 1, 1, 2, 5, -3], n)) + 10**6
    received = T0 + np.cumsum(rng.integers(0, 2, n)) * 1_000
    deltas = pl.DataFrame({"received_time": received, "origin_time": received - 7, "sequence_number": sequence})
    msgs = messages(deltas).with_columns(pl.col("sequence_number").cum_max().shift(1).alias("previous_sequence_number"))
    expected = gap_messages(msgs, contiguous).select("received_time", "sequence_number", "previous_sequence_number")
    assert expected.height > 50
    starts = np.flatnonzero(np.r_[True, (np.diff(received) != 0) | (np.diff(sequence) != 0)])
    cuts = [0, *starts[[1, 2, 30, 31, len(starts) // 2]], n]  # batches end at message boundaries
    found, top, seen = [], 0, False
    no_lead = np.zeros(0, dtype=np.int64)
    for a, b in zip(cuts[:-1], cuts[1:], strict=True):
        # A batch in two chunks, cut anywhere (inside a message too): the second leads on from the first.
        for c, d in ((a, (a + b) // 2), ((a + b) // 2, b)):
            if c == d:
                continue
            lead = (received[c - 1 : c], sequence[c - 1 : c]) if c > a else (no_lead, no_lead)
            rows, previous, top = gap_rows(received[c:d], sequence[c:d], contiguous, top, seen, *lead)
            seen = True
            found.append(pl.DataFrame({"row": rows + c, "previous_sequence_number": previous}))
    ours = pl.concat(found)
    assert top == sequence.max()
    events = deltas[ours["row"]].select("received_time", "sequence_number")
    assert events.rows() == expected.select("received_time", "sequence_number").rows()
    assert ours["previous_sequence_number"].to_list() == expected["previous_sequence_number"].to_list()


# ---------------------------------------------------------------------------------------
# A file of the wrong day (issue 29, item 8)
# ---------------------------------------------------------------------------------------


def test_a_file_of_another_day_is_refused_whole_and_the_good_day_stays(local):
    """Trades of the day before saved under this day's name: most rows lie outside the day, so the
    file is quarantined and named, and the good partition already in the lake is kept byte for byte
    (it used to be replaced by the few rows inside the tolerance)."""
    from market_pipeline.core.lake.paths import PARTITION_FILE, partition_dir, quarantine_dir, raw_partition_dir
    from market_pipeline.defs.common.importer import PartitionRejected

    settings = local.settings()
    stats = _import(settings, "trades")
    lake_file = raw_partition_dir(settings.lake_dir, "trades", EXCHANGE, SYMBOL, DAY) / PARTITION_FILE
    good = lake_file.read_bytes()
    day_before = vendor_frame("trades", DAY - dt.timedelta(days=1), 40)
    last_hour = pl.col("received_time") >= T0 - 3_600 * NS  # the previous day's last minutes: in the tolerance
    assert 0 < day_before.filter(last_hour).height < 20
    _rewrite(local, "trades", day_before)
    with pytest.raises(PartitionRejected, match=r"rows lie outside 2024-03-01 \(UTC\): a file of another day"):
        _import(settings, "trades")
    assert lake_file.read_bytes() == good and stats.rows == 40
    vendor_file = local.lake.path("trades", EXCHANGE, SYMBOL, DAY)
    quarantined = partition_dir(quarantine_dir(settings.lake_dir), "trades", EXCHANGE, SYMBOL, DAY)
    assert (quarantined / vendor_file.name).read_bytes() == vendor_file.read_bytes()


def test_an_import_keeping_a_fraction_of_the_partition_is_refused(local):
    from market_pipeline.core.lake.paths import PARTITION_FILE, raw_partition_dir
    from market_pipeline.defs.common.importer import PartitionRejected

    settings = local.settings()
    _import(settings, "trades")
    lake_file = raw_partition_dir(settings.lake_dir, "trades", EXCHANGE, SYMBOL, DAY) / PARTITION_FILE
    good = lake_file.read_bytes()
    _rewrite(local, "trades", vendor_frame("trades", DAY, 40).head(12))  # in the day, but 12 of 40 rows
    with pytest.raises(PartitionRejected, match=f"keeps 12 rows where {lake_file} holds 40"):
        _import(settings, "trades")
    assert lake_file.read_bytes() == good
    _rewrite(local, "trades", vendor_frame("trades", DAY, 40).head(30))  # a smaller day, but not a fragment
    assert _import(settings, "trades").rows == 30

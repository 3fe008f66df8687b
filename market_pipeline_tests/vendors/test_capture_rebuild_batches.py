"""The capture rebuild replays `book_delta_v2` in batches: every file it writes is byte-identical
whatever the batch size, on the real captures (a batch cut inside a message's rows is moved to the
message's end, inside the REST snapshot's block of buffered diffs, at midnight)."""

from __future__ import annotations

import hashlib
from decimal import Decimal
from pathlib import Path

import pytest

from market_pipeline.core.book.rebuild import Grid
from market_pipeline.vendors.binance import delta_batches
from market_pipeline_tests.support.binance_capture import (
    DOCUMENTED,
    SPOT,
    USDM,
    parse_capture,
    real_paths,
    split_by_day,
)
from market_pipeline_tests.support.midnight_capture import DEPTH
from market_pipeline_tests.support.midnight_capture import shifted_capture as _shifted_capture
from market_pipeline_tests.support.midnight_capture import write_day_tables as _write_day

pytestmark = pytest.mark.slow  # the real captures rebuilt at several batch sizes: not in `make test-quick`

GRID = Grid(Decimal("0.01"), Decimal("0.00001"))
# Fewer rows than most diffs have (USD-M ~68, spot ~45 a message): most batch ends fall inside one.
TINY, HUGE = 50, 10**9


def _rebuild_days(paths: list[Path], futures: bool, out: Path, interval_ms: int) -> dict[str, dict]:
    """Rebuild every day of the capture in order; the counters of each day."""
    from market_pipeline.vendors.binance.rebuild import rebuild_capture_day

    counters, previous = {}, None
    for day, tables in split_by_day(parse_capture(paths)).items():
        raw = _write_day(tables, day, out / "raw")
        where = out / str(day)
        result = rebuild_capture_day(
            raw["book_delta_v2"],
            raw["depth_snapshot"],
            raw["book_ticker"],
            raw["book"],
            raw["trades"],
            where / "books.parquet",
            previous,
            where / "checkpoint" / "book.parquet",
            GRID,
            day,
            futures,
            DEPTH,
            interval_ms,
            fidelity_path=where / "fidelity.parquet",
            capture_files=len(paths),
            shape_path=where / "shape.parquet",
        )
        previous = where / "checkpoint" / "book.parquet"
        counters[str(day)] = {**result.counters, "delta_rows": result.delta_rows, "trades": result.trades}
    return counters


def _digests(root: Path) -> dict[str, str]:
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*.parquet"))
        if "raw" not in path.parts
    }


@pytest.mark.parametrize("capture", ["usdm", "spot", "spot-midnight-in-snapshot-block"])
@pytest.mark.parametrize("interval_ms", [0, 1000])
def test_rebuild_files_do_not_depend_on_the_delta_batch_size(capture, interval_ms, tmp_path, monkeypatch):
    names = USDM if capture == "usdm" else SPOT
    paths = real_paths(names)
    if capture == "spot-midnight-in-snapshot-block":
        _shifted_capture(paths, tmp_path / "shifted")
        paths = sorted((tmp_path / "shifted").iterdir())
    results = {}
    for batch_rows in (TINY, HUGE):
        monkeypatch.setattr(delta_batches, "DELTA_BATCH_ROWS", batch_rows)
        counters = _rebuild_days(paths, names == USDM, tmp_path / str(batch_rows), interval_ms)
        results[batch_rows] = counters, _digests(tmp_path / str(batch_rows))
    assert results[TINY] == results[HUGE]
    counters, files = results[HUGE]
    # books, shape, fidelity, checkpoint, sync carry and pending tickers of each day
    assert len(files) == 6 * len(counters)
    total = {name: sum(day[name] for day in counters.values()) for name in ("diffs", "applied", "gaps")}
    total.update(
        ticker_checks=sum(day["ticker_checks"] for day in counters.values()),
        ticker_mismatches=sum(day["ticker_mismatches"] for day in counters.values()),
        trades=sum(day["trades"] for day in counters.values()),
    )
    assert total == {name: DOCUMENTED[names][name] for name in total}


def test_delta_batches_never_cut_a_message(tmp_path):
    tables = parse_capture(real_paths(USDM))
    ((day, day_tables),) = split_by_day(tables).items()
    path = _write_day(day_tables, day, tmp_path)["book_delta_v2"]
    batches = list(delta_batches.read_delta_batches(path, batch_rows=TINY))
    assert sum(b.height for b in batches) == tables.book_delta_v2.height
    lines = [(b.get_column("line_no")[0], b.get_column("line_no")[-1]) for b in batches]
    assert all(last < first for (_, last), (first, _) in zip(lines, lines[1:], strict=False))
    assert len(batches) > 1000


def test_rows_out_of_line_order_are_an_error_naming_the_file(tmp_path):
    import polars as pl

    tables = parse_capture(real_paths(USDM))
    ((day, day_tables),) = split_by_day(tables).items()
    path = _write_day(day_tables, day, tmp_path)["book_delta_v2"]
    pl.read_parquet(path).reverse().write_parquet(path)
    with pytest.raises(ValueError, match=f"{path}: book_delta_v2 rows are not in capture line order"):
        list(delta_batches.read_delta_batches(path, batch_rows=1000))


@pytest.mark.parametrize("names", [USDM, SPOT], ids=["usdm", "spot"])
def test_verify_capture_does_not_depend_on_chunk_or_batch_size(names, monkeypatch):
    from market_pipeline.vendors.binance import capture_stream
    from market_pipeline.vendors.binance.verify import verify_capture

    paths = real_paths(names)
    results = []
    for chunk_lines, batch_rows in ((97, TINY), (10**7, HUGE)):
        monkeypatch.setattr(capture_stream, "CHUNK_LINES", chunk_lines)
        monkeypatch.setattr(delta_batches, "DELTA_BATCH_ROWS", batch_rows)
        results.append(verify_capture(paths))
    assert results[0] == results[1]
    assert {key: results[0][key] for key in DOCUMENTED[names]} == DOCUMENTED[names]


def test_books_do_not_depend_on_the_output_batch_size(tmp_path, monkeypatch):
    """Book rows are encoded and written on a thread while the kernel fills the other buffer set:
    many small output batches give the same rows as one."""
    import polars as pl
    from polars.testing import assert_frame_equal

    from market_pipeline.vendors.binance import rebuild

    results = {}
    for rows in (7, rebuild.OUTPUT_BATCH_ROWS):
        monkeypatch.setattr(rebuild, "OUTPUT_BATCH_ROWS", rows)
        counters = _rebuild_days(real_paths(USDM), True, tmp_path / str(rows), 1000)
        books = {day: pl.read_parquet(tmp_path / str(rows) / day / "books.parquet") for day in counters}
        results[rows] = counters, books
    (small_counters, small_books), (counters, books) = results.values()
    assert small_counters == counters and sum(day["rows_written"] for day in counters.values()) > 7
    for day, frame in books.items():
        assert_frame_equal(small_books[day], frame, check_exact=True)

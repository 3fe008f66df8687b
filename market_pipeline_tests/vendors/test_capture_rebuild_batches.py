"""The capture rebuild replays `book_delta_v2` in batches: every file it writes is byte-identical
whatever the batch size, on the real captures (a batch cut inside a message's rows is moved to the
message's end, inside the REST snapshot's block of buffered diffs, at midnight). So is it whatever
the size of the bookTickers' batches and row groups, which set the windows of them each batch of
diffs meets (`ticker_store`).

A tiny batch costs a fixed overhead (frames, a kernel call), so the tiny sizes run on the first
lines of each capture, which hold every kind of cut (`support/capture_prefix.py`); the whole
captures run at the production sizes and reproduce the documented figures."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
from decimal import Decimal
from pathlib import Path

import pytest

from market_pipeline.core.book.rebuild import Grid
from market_pipeline.vendors.binance import capture_stream, delta_batches, ticker_store
from market_pipeline_tests.support.binance_capture import (
    DOCUMENTED,
    SPOT,
    USDM,
    parse_capture,
    real_paths,
    split_by_day,
)
from market_pipeline_tests.support.capture_prefix import capture_prefix, shifted_prefix, snapshot_index
from market_pipeline_tests.support.midnight_capture import DEPTH
from market_pipeline_tests.support.midnight_capture import shifted_capture as _shifted_capture
from market_pipeline_tests.support.midnight_capture import write_day_tables as _write_day
from market_pipeline_tests.support.reference_book import replay

pytestmark = pytest.mark.slow  # the real captures rebuilt at several batch sizes: not in `make test-quick`

GRID = Grid(Decimal("0.01"), Decimal("0.00001"))
# Fewer rows than most diffs have (USD-M ~68, spot ~45 a message): most batch ends fall inside one.
TINY, HUGE = 50, 10**9
PRODUCTION_BATCH_ROWS = delta_batches.DELTA_BATCH_ROWS
# Lines of a capture's start the tiny batches replay: the REST snapshot (line 8 of the spot
# capture, 55 of the USD-M one) and the diffs buffered for it, then ~500 diffs in sync (over 300
# batch ends of 50 rows, 49 and 95 ticker checks across them); the spot ones shifted so that
# midnight falls in sync, before line 3000, or (as in the whole shifted capture) just before the
# snapshot line.
PREFIX_LINES, PREFIX_MIDNIGHT = 6000, 3000
CAPTURES = ["usdm", "spot", "spot-midnight-in-snapshot-block"]


@dataclasses.dataclass(frozen=True)
class World:
    """A capture parsed once and each of its days' tables written once, as raw partition files."""

    futures: bool
    capture_files: int
    days: dict[dt.date, dict[str, Path]]
    paths: list[Path]


def _world(paths: list[Path], futures: bool, root: Path) -> World:
    days = {day: _write_day(tables, day, root / "raw") for day, tables in split_by_day(parse_capture(paths)).items()}
    return World(futures, len(paths), days, paths)


@pytest.fixture(scope="module")
def worlds(tmp_path_factory):
    """world(capture, prefix) -> World, each built once for the module (the whole captures are
    parsed once, not once per test and batch size)."""
    built: dict[tuple[str, bool], World] = {}

    def world(capture: str, prefix: bool) -> World:
        if (capture, prefix) not in built:
            names = USDM if capture == "usdm" else SPOT
            paths = real_paths(names)
            root = tmp_path_factory.mktemp(f"{capture}-{'prefix' if prefix else 'whole'}")
            if capture == "spot-midnight-in-snapshot-block" and not prefix:
                _shifted_capture(paths, root / "shifted")
                paths = sorted((root / "shifted").iterdir())
            elif prefix and capture == "usdm":
                paths = capture_prefix(paths, root / "prefix", PREFIX_LINES)
            elif prefix:
                before = PREFIX_MIDNIGHT if capture == "spot" else snapshot_index(paths[0])
                paths = [shifted_prefix(paths[0], root / "prefix", PREFIX_LINES, before)]
            built[capture, prefix] = _world(paths, names == USDM, root)
        return built[capture, prefix]

    return world


def _rebuild_days(world: World, out: Path, interval_ms: int) -> dict[str, dict]:
    """Rebuild every day of the capture in order; the counters of each day."""
    from market_pipeline.vendors.binance.rebuild import rebuild_capture_day

    counters, previous = {}, None
    for day, raw in world.days.items():
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
            world.futures,
            DEPTH,
            interval_ms,
            fidelity_path=where / "fidelity.parquet",
            capture_files=world.capture_files,
            shape_path=where / "shape.parquet",
        )
        previous = where / "checkpoint" / "book.parquet"
        counters[str(day)] = {
            **result.counters,
            "delta_rows": result.delta_rows,
            "trades": result.trades,
            "in_sync_at_end": result.in_sync_at_end,
        }
    return counters


def _digests(root: Path) -> dict[str, str]:
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*.parquet"))
    }


def _total(counters: dict[str, dict], names) -> dict[str, int]:
    return {name: sum(day[name] for day in counters.values()) for name in names}


@pytest.mark.parametrize("capture", CAPTURES)
@pytest.mark.parametrize("interval_ms", [0, 1000])
def test_rebuild_files_do_not_depend_on_the_batch_sizes(capture, interval_ms, worlds, tmp_path, monkeypatch):
    names = USDM if capture == "usdm" else SPOT
    prefix = worlds(capture, prefix=True)
    results = {}
    # Three tickers a row group: the window of a tiny batch of diffs spans a few groups, cut anywhere.
    for batch_rows, ticker_rows in ((TINY, 3), (HUGE, HUGE)):
        monkeypatch.setattr(delta_batches, "DELTA_BATCH_ROWS", batch_rows)
        monkeypatch.setattr(ticker_store, "BATCH_ROWS", ticker_rows)
        counters = _rebuild_days(prefix, tmp_path / str(batch_rows), interval_ms)
        results[batch_rows] = counters, _digests(tmp_path / str(batch_rows))
    assert results[TINY] == results[HUGE]

    # The prefix holds the cuts: the diffs buffered for the snapshot (every one the whole capture
    # skips), hundreds of batch ends in sync with ticker checks, and midnight where it is asked.
    counters, files = results[HUGE]
    assert len(files) == 6 * len(counters)  # books, shape, fidelity, checkpoint, sync carry, pending tickers
    figures = ("diffs", "skipped_before_sync", "applied", "gaps", "ticker_checks", "ticker_mismatches", "trades")
    total = _total(counters, figures)
    reference = replay(prefix.paths)  # the whole-file reference replay of the same lines
    assert total == {name: reference[name] for name in figures}
    assert total["skipped_before_sync"] == DOCUMENTED[names]["skipped_before_sync"] and total["gaps"] == 0
    assert _total(counters, ["delta_rows"])["delta_rows"] > 300 * TINY and total["ticker_checks"] > 40
    first = next(iter(counters.values()))
    if capture == "usdm":
        assert len(counters) == 1
    elif capture == "spot":  # midnight in sync: day 2 continues from day 1's book
        assert len(counters) == 2 and first["in_sync_at_end"] and first["applied"] > 100
    else:  # midnight just before the snapshot line: day 1 only buffers diffs, carried into day 2
        assert len(counters) == 2 and first["applied"] == 0 and first["diffs_carried_out"] > 0

    # The whole capture at the production batch size: the documented figures.
    whole = worlds(capture, prefix=False)
    monkeypatch.setattr(delta_batches, "DELTA_BATCH_ROWS", PRODUCTION_BATCH_ROWS)
    counters = _rebuild_days(whole, tmp_path / "whole", interval_ms)
    assert len(_digests(tmp_path / "whole")) == 6 * len(counters) == 6 * len(names)
    total = _total(counters, ("diffs", "applied", "gaps", "ticker_checks", "ticker_mismatches", "trades"))
    assert total == {name: DOCUMENTED[names][name] for name in total}


def test_delta_batches_never_cut_a_message(worlds):
    import polars as pl

    ((day, raw),) = worlds("usdm", prefix=True).days.items()
    path = raw["book_delta_v2"]
    line_no = pl.read_parquet(path, columns=["line_no"]).get_column("line_no")
    batches = list(delta_batches.read_delta_batches(path, batch_rows=TINY))
    assert pl.concat([b.get_column("line_no") for b in batches]).equals(line_no)  # every row, in order
    lines = [(b.get_column("line_no")[0], b.get_column("line_no")[-1]) for b in batches]
    assert all(last < first for (_, last), (first, _) in zip(lines, lines[1:], strict=False))
    # Nearly every one of the reader's cuts (every 50 rows) fell inside a message, and was moved.
    inside = sum(line_no[end - 1] == line_no[end] for end in range(TINY, len(line_no), TINY))
    assert inside > 500


def test_rows_out_of_line_order_are_an_error_naming_the_file(worlds, tmp_path):
    import polars as pl

    ((day, raw),) = worlds("usdm", prefix=True).days.items()
    path = tmp_path / "book_delta_v2.parquet"
    pl.read_parquet(raw["book_delta_v2"]).reverse().write_parquet(path)
    with pytest.raises(ValueError, match=f"{path}: book_delta_v2 rows are not in capture line order"):
        list(delta_batches.read_delta_batches(path, batch_rows=1000))


@pytest.mark.parametrize("names", [USDM, SPOT], ids=["usdm", "spot"])
def test_verify_capture_does_not_depend_on_chunk_or_batch_size(names, tmp_path, monkeypatch):
    from market_pipeline.vendors.binance.verify import verify_capture

    paths = real_paths(names)
    prefix = capture_prefix(paths, tmp_path, PREFIX_LINES)
    results = []
    for chunk_lines, batch_rows in ((97, TINY), (10**7, HUGE)):
        monkeypatch.setattr(capture_stream, "CHUNK_LINES", chunk_lines)
        monkeypatch.setattr(delta_batches, "DELTA_BATCH_ROWS", batch_rows)
        results.append(verify_capture(prefix))
    assert results[0] == results[1]
    # The prefix holds the cuts: the diffs buffered for the snapshot, ~60 chunk ends, hundreds of
    # batch ends in sync with ticker checks; its figures are the reference replay's.
    reference = replay(prefix)
    figures = ("diffs", "skipped_before_sync", "applied", "gaps", "ticker_checks", "ticker_mismatches", "trades")
    assert {key: results[0][key] for key in figures} == {key: reference[key] for key in figures}
    assert results[0]["skipped_before_sync"] == DOCUMENTED[names]["skipped_before_sync"]
    assert results[0]["ticker_checks"] > 40 and results[0]["applied"] > 400
    # The whole capture at the production sizes: the documented figures.
    monkeypatch.undo()
    result = verify_capture(paths)
    assert {key: result[key] for key in DOCUMENTED[names]} == DOCUMENTED[names]


def test_books_do_not_depend_on_the_output_batch_size(worlds, tmp_path, monkeypatch):
    """Book rows are encoded and written on a thread while the kernel fills the other buffer set:
    many small output batches give the same rows as one."""
    import polars as pl
    from polars.testing import assert_frame_equal

    from market_pipeline.vendors.binance import rebuild

    world = worlds("usdm", prefix=False)
    results = {}
    for rows in (7, rebuild.OUTPUT_BATCH_ROWS):
        monkeypatch.setattr(rebuild, "OUTPUT_BATCH_ROWS", rows)
        counters = _rebuild_days(world, tmp_path / str(rows), 1000)
        books = {day: pl.read_parquet(tmp_path / str(rows) / day / "books.parquet") for day in counters}
        results[rows] = counters, books
    (small_counters, small_books), (counters, books) = results.values()
    assert small_counters == counters and sum(day["rows_written"] for day in counters.values()) > 7
    for day, frame in books.items():
        assert_frame_equal(small_books[day], frame, check_exact=True)

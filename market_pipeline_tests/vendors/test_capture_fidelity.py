"""Capture fidelity comes from the table the capture rebuild writes beside its books, never from re-parsing."""

from __future__ import annotations

import datetime as dt
import gzip
from pathlib import Path

import pytest

from market_pipeline.core.lake.paths import PARTITION_FILE, capture_fidelity_dir
from market_pipeline.core.quality.fidelity import FIDELITY_COLUMNS, capture_fidelity, read_fidelity_table
from market_pipeline_tests.support.binance_capture import REAL_DIR

SPOT_KEY, USDM_KEY = "BINANCE:BTC-USDT", "BINANCE_FUTURES:BTC-USDT-PERP"
DAY1, DAY2 = dt.date(2024, 8, 8), dt.date(2024, 8, 9)
USDM_FILE = "binance_usdm_btcusdt_20240808.gz"
SPOT_FILES = ("binance_spot_btcusdt_20240808.gz", "binance_spot_btcusdt_20240809.gz")


def _needs(*names: str) -> None:
    for name in names:
        if not (REAL_DIR / name).is_file():
            pytest.skip(f"third-party Binance captures not available in {REAL_DIR}: {name}")


def _use_captures(monkeypatch, directory: Path) -> None:
    monkeypatch.setenv("PIPELINE_SOURCE", "capture")
    monkeypatch.setenv("PIPELINE_CAPTURE_DIR", str(directory))
    monkeypatch.setenv("PIPELINE_INSTRUMENTS", f"{SPOT_KEY},{USDM_KEY}")
    # The real captures are checked as production rebuilds them: a book row every 100 ms (the
    # distributions the KS tests compare are sampled from them), not the tests' row a minute.
    monkeypatch.delenv("PIPELINE_BOOK__SAMPLE_INTERVAL_MS")


def _rebuild(key: str, day: dt.date):
    """Import the raw partitions from the captures, rebuild the books; (result, fidelity, table figures)."""
    from market_pipeline.defs.books.assets import rebuild_instrument_day
    from market_pipeline.defs.common.importer import import_partition
    from market_pipeline.settings import load_settings
    from market_pipeline.vendors.registry import build_source

    settings = load_settings()
    instrument = next(i for i in settings.universe if i.key == key)
    source = build_source(settings)
    for table in ("trades", "book_delta_v2", "depth_snapshot", "book", "book_ticker"):
        import_partition(source, settings, table, instrument, day, "test")
    result = rebuild_instrument_day(source, settings, instrument, day).result
    path = capture_fidelity_dir(settings.lake_dir, instrument.exchange, instrument.symbol, day) / PARTITION_FILE
    _, figures = read_fidelity_table(path)
    return result, capture_fidelity(path), figures


def _assert_figures_are_the_rebuilds(result, fidelity, figures) -> None:
    c = result.counters
    assert fidelity["capture_ticker_checks"] == c["ticker_checks"]
    assert fidelity["capture_ticker_agreement_share"] == (
        1 - c["ticker_mismatches"] / c["ticker_checks"] if c["ticker_checks"] else None
    )
    for name in ("gaps", "ticker_checks", "ticker_mismatches", "rows_written_unsynced", "diffs", "applied"):
        assert figures[name] == c[name], name


def test_spot_capture_over_midnight_reports_the_rebuilds_figures_on_both_days(monkeypatch, data_dir):
    _needs(*SPOT_FILES)
    _use_captures(monkeypatch, REAL_DIR)
    checks = 0
    for day in (DAY1, DAY2):
        result, fidelity, figures = _rebuild(SPOT_KEY, day)
        _assert_figures_are_the_rebuilds(result, fidelity, figures)
        assert set(fidelity) == set(FIDELITY_COLUMNS)
        assert fidelity["capture_files"] == 1  # the file named after the day; day 1's ends before midnight
        assert figures["gaps"] == 0 and fidelity["capture_ticker_agreement_share"] == 1.0
        # The second day has no REST snapshot of its own: it continues from the checkpoint, and
        # its tickers are checked all the same.
        assert fidelity["capture_ticker_checks"] > 0
        assert fidelity["capture_samples"] > 200  # about 5 minutes a day on a 1 s grid
        # The books and the exchange's own top of book are the same distribution.
        assert fidelity["ks_spread_statistic"] < 0.1 and fidelity["ks_spread_pvalue"] > 0.05
        assert fidelity["ks_mid_return_statistic"] < 0.1 and fidelity["ks_mid_return_pvalue"] > 0.05
        checks += fidelity["capture_ticker_checks"]
    assert result.start_mode == "previous_day_checkpoint"
    assert checks == 1072  # ../shared/reference/data-sources.md


def test_usdm_capture_reports_the_rebuilds_figures(monkeypatch, data_dir):
    _needs(USDM_FILE)
    _use_captures(monkeypatch, REAL_DIR)
    result, fidelity, figures = _rebuild(USDM_KEY, DAY1)
    _assert_figures_are_the_rebuilds(result, fidelity, figures)
    assert (fidelity["capture_files"], fidelity["capture_ticker_checks"], figures["gaps"]) == (1, 629, 0)


def test_a_capture_with_one_diff_removed_reports_one_gap(monkeypatch, data_dir, tmp_path):
    _needs(USDM_FILE)
    lines = gzip.open(REAL_DIR / USDM_FILE, "rt").read().splitlines(keepends=True)
    diff_lines = [i for i, line in enumerate(lines) if "@depth" in line]
    del lines[diff_lines[len(diff_lines) // 2]]
    captures = tmp_path / "captures"
    captures.mkdir()
    with gzip.open(captures / USDM_FILE, "wt") as fh:
        fh.writelines(lines)
    _use_captures(monkeypatch, captures)
    result, fidelity, figures = _rebuild(USDM_KEY, DAY1)
    _assert_figures_are_the_rebuilds(result, fidelity, figures)
    assert figures["gaps"] == result.counters["gaps"] == 1
    assert figures["rows_written_unsynced"] > 0  # the rows from the gap to the end (no resync snapshot)
    assert fidelity["capture_ticker_checks"] < 629  # nothing is checked while out of sync


def test_without_the_rebuilds_table_every_figure_is_null(tmp_path):
    assert capture_fidelity(tmp_path / "absent.parquet") == dict.fromkeys(FIDELITY_COLUMNS)

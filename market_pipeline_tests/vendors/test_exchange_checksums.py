"""The exchange's own book checksums as a pipeline figure and a blocking check (issue 35 item 3):
an OKX capture day's checksums replayed by the `okx_capture` source (`exchange_checksums`), the
`validation_reports` columns they fill, the `exchange_checksums` check on `reconstructed_books`
(for a primary capture and for a PIPELINE_SOURCES reference), and Kraken's replay as the plain
function a Kraken capture source calls. One small synthetic instrument-day each, no Dagster run.
"""

from __future__ import annotations

import datetime as dt
import html
import json
import os
import re
from decimal import Decimal

import pytest

from market_pipeline.core.instruments import Instrument, InstrumentSpec
from market_pipeline.core.quality.checksums import ChecksumFigures, ChecksumMismatch, checksum_columns
from market_pipeline.core.quality.report import render_report
from market_pipeline.vendors.okx.source import OkxCaptureSource
from market_pipeline_tests.support import kraken_captures as kc
from market_pipeline_tests.support import okx_captures as oc

MESSAGES = 60  # book updates after the snapshot
DAY = dt.date(2025, 11, 24)  # oc.START_NS is its midnight
KEY = "OKX:BTC-USDT"
NAME = "okx_spot_btc-usdt_20251124.gz"
SPEC = {KEY: {"tick_size": "0.1", "lot_size": "0.00000001"}}
SPOT = Instrument(
    exchange="OKX", symbol="BTC-USDT", spec=InstrumentSpec(tick_size=Decimal("0.1"), lot_size=Decimal("1e-8"))
)


@pytest.fixture(scope="module")
def walk():
    return oc.walk(MESSAGES)


def _write(tmp_path, rendered, name=NAME):
    captures = tmp_path / "captures"
    captures.mkdir(exist_ok=True)
    return kc.write_capture(captures / name, rendered.lines)


def _checksums(tmp_path, day=DAY):
    source = OkxCaptureSource(tmp_path / "captures", tmp_path / "cache", tmp_path / "lake")
    return source.exchange_checksums(SPOT, day)


def _settings(tmp_path, env: dict[str, str]):
    from market_pipeline.settings import load_settings

    with pytest.MonkeyPatch.context() as mp:
        for name, value in {
            "PIPELINE_SOURCE": "okx_capture",
            "PIPELINE_INSTRUMENTS": KEY,
            "PIPELINE_INSTRUMENT_SPECS": json.dumps(SPEC),
            "PIPELINE_START_DATE": "2025-11-01",
            "PIPELINE_DATA_DIR": str(tmp_path / "data"),
            "PIPELINE_CAPTURE_DIR": str(tmp_path / "captures"),
            **env,
        }.items():
            mp.setenv(name, value)
        return load_settings()


def _received(line: int) -> int:
    """The receive time oc.render gives the file's 1-based `line`."""
    return oc.START_NS + (line - 1) * oc.STEP_NS


def test_every_checksum_of_a_good_day_is_checked_and_agrees(tmp_path, walk):
    _write(tmp_path, oc.render(walk))
    # The snapshot and every update carry one: the figure is the day's book message count.
    assert _checksums(tmp_path) == ChecksumFigures(checked=MESSAGES + 1, mismatches=0, unchecked=0, first_mismatch=None)


def test_a_damaged_checksum_is_counted_and_named(tmp_path, walk):
    bad = 25
    rendered = oc.render(walk, bad_checksum=bad)
    path = _write(tmp_path, rendered)
    line = rendered.message_lines[bad]
    # The book is unsynced from the bad update on (no snapshot follows): later ones are not checked.
    assert _checksums(tmp_path) == ChecksumFigures(
        checked=1 + bad + 1,
        mismatches=1,
        unchecked=0,
        first_mismatch=ChecksumMismatch(str(path), line, _received(line)),
    )


def test_retired_checksums_are_unchecked(tmp_path, walk):
    _write(tmp_path, oc.render(walk, retired=True))  # OKX's 0 since 2026
    assert _checksums(tmp_path) == ChecksumFigures(checked=0, mismatches=0, unchecked=MESSAGES + 1, first_mismatch=None)


def test_only_the_messages_received_within_the_day_count(tmp_path, walk):
    """A file named the day before that runs past midnight: its start is replayed for the book, its
    checksums count for the day they were received on."""
    shift = 30 * oc.STEP_NS  # the first 30 lines before midnight
    rendered = oc.render(walk)
    lines = [f"{int(stamp) - shift} {body}" for stamp, _, body in (line.partition(" ") for line in rendered.lines)]
    _write(tmp_path, oc.Rendered(lines, {}, [], 0), name="okx_spot_btc-usdt_20251123.gz")
    book_lines = [3, *rendered.message_lines.values()]  # the snapshot is line 3
    after_midnight = sum(_received(line) - shift >= oc.START_NS for line in book_lines)
    assert 0 < after_midnight < len(book_lines)
    before = _checksums(tmp_path, DAY - dt.timedelta(days=1))
    on_day = _checksums(tmp_path, DAY)
    assert (before.checked, on_day.checked) == (len(book_lines) - after_midnight, after_midnight)
    assert _checksums(tmp_path, DAY + dt.timedelta(days=1)) is None  # no capture that day


def test_a_days_checksums_are_replayed_once_until_its_files_change(tmp_path, walk, monkeypatch):
    from market_pipeline.vendors.okx import verify

    _write(tmp_path, oc.render(walk))
    replays = []
    replay = verify.day_checksums
    monkeypatch.setattr(verify, "day_checksums", lambda paths, day: replays.append(day) or replay(paths, day))
    good = _checksums(tmp_path)
    assert _checksums(tmp_path) == good and replays == [DAY]  # the check's and validation's ask: one replay
    bad = oc.render(walk, bad_checksum=5)
    path = _write(tmp_path, bad)
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))  # a changed file, whatever the clock
    assert _checksums(tmp_path).first_mismatch == ChecksumMismatch(
        str(path), bad.message_lines[5], _received(bad.message_lines[5])
    )
    assert replays == [DAY, DAY]


def test_validation_columns_are_exact_integers_or_null():
    first = ChecksumMismatch("/captures/okx_spot_btc-usdt_20251124.gz", 57, oc.START_NS + 1)
    assert checksum_columns(ChecksumFigures(40, 2, 3, first)) == {
        "checksums_checked": 40,
        "checksum_mismatches": 2,
        "checksums_unchecked": 3,
        "first_checksum_mismatch_file": first.file,
        "first_checksum_mismatch_line": 57,
        "first_checksum_mismatch_received_time": oc.START_NS + 1,
    }
    assert set(checksum_columns(None).values()) == {None}  # a source without exchange checksums


def test_the_validation_row_carries_the_columns():
    from market_pipeline.core.quality.checksums import CHECKSUM_COLUMNS
    from market_pipeline.core.quality.validation import DAILY_SCHEMA

    assert {name: DAILY_SCHEMA[name] for name in CHECKSUM_COLUMNS} == CHECKSUM_COLUMNS


def _check(settings):
    from market_pipeline.defs.books.checks import exchange_checksums

    (instrument,) = settings.universe
    return exchange_checksums.evaluate(None, settings, instrument, DAY)


def test_the_blocking_check_passes_a_good_day(tmp_path, walk):
    _write(tmp_path, oc.render(walk))
    finding = _check(_settings(tmp_path, {}))
    assert finding.severity is None
    assert finding.figures == {
        "checksums_of": "primary",
        "checksums_checked": MESSAGES + 1,
        "checksum_mismatches": 0,
        "checksums_unchecked": 0,
    }


def test_the_blocking_check_fails_naming_the_first_bad_update(tmp_path, walk):
    from market_pipeline.defs.books.checks import exchange_checksums
    from market_pipeline.defs.common.checks import ERROR

    bad = 10
    rendered = oc.render(walk, bad_checksum=bad)
    path = _write(tmp_path, rendered)
    line = rendered.message_lines[bad]
    finding = _check(_settings(tmp_path, {}))
    assert exchange_checksums.blocking
    assert finding.severity == ERROR
    assert finding.figures["checksum_mismatches"] == 1
    assert f"{path}:{line} (received 2025-11-24T00:00:" in finding.summary
    assert finding.summary.startswith("1 of 12 exchange checksum(s) disagree")
    assert finding.worst_rows == [{"file": str(path), "line": line, "received_time": _received(line)}]


def test_the_check_reads_a_reference_capture(tmp_path, walk):
    """A bought day (here the synthetic source) whose PIPELINE_SOURCES reference is the OKX capture:
    the reference's checksums are judged, and a disagreement warns without blocking the bought day."""
    from market_pipeline.defs.common.checks import WARN

    rendered = oc.render(walk, bad_checksum=3)
    _write(tmp_path, rendered)
    sources = {KEY: {"primary": "synthetic", "reference": "okx_capture"}}
    settings = _settings(tmp_path, {"PIPELINE_SOURCE": "synthetic", "PIPELINE_SOURCES": json.dumps(sources)})
    finding = _check(settings)
    assert finding.severity == WARN and finding.figures["checksum_mismatches"] == 1
    assert finding.figures["checksums_of"] == "okx_capture" and finding.summary.startswith("reference okx_capture: ")
    assert finding.worst_rows[0]["line"] == rendered.message_lines[3]


def test_the_check_passes_a_source_without_checksums(tmp_path):
    finding = _check(_settings(tmp_path, {"PIPELINE_SOURCE": "synthetic"}))
    assert finding.severity is None and finding.figures == {}
    assert "no exchange checksum" in finding.summary


@pytest.mark.parametrize("version", [1, 2])
def test_kraken_day_checksums_name_the_update_after_a_dropped_one(tmp_path, version):
    from market_pipeline.vendors.kraken.verify import day_checksums

    updates = 120
    book = kc.synthetic_book(updates)
    snapshot_checksum = int(version == 2)  # v2 snapshots carry one
    good = kc.write_capture(tmp_path / "good.gz", kc.render(version, book).lines)
    assert day_checksums([good], DAY) == ChecksumFigures(updates + snapshot_checksum, 0, 0, None)

    dropped = kc.droppable_update(book, updates // 2)
    rendered = kc.render(version, book, drop=dropped)
    bad = kc.write_capture(tmp_path / "bad.gz", rendered.lines)
    line = rendered.update_lines[dropped + 1]
    received = kc.START_NS + (line - 1) * kc.STEP_NS
    # Unsynced from the disagreeing update on: nothing after it is checked.
    assert day_checksums([bad], DAY) == ChecksumFigures(
        dropped + 1 + snapshot_checksum, 1, 0, ChecksumMismatch(str(bad), line, received)
    )


@pytest.mark.parametrize("bad", [None, 7])
def test_validation_reports_writes_the_days_figures(tmp_path, walk, bad):
    """The `validation_reports` task of an okx_capture day imported and rebuilt as the raw and
    books stages do it (no Dagster run): the row carries the day's checksums."""
    from market_pipeline.defs.books.assets import rebuild_instrument_day
    from market_pipeline.defs.common.importer import import_partition
    from market_pipeline.defs.quality.assets import validation_task
    from market_pipeline.vendors.registry import build_source

    rendered = oc.render(walk, bad_checksum=bad)
    path = _write(tmp_path, rendered)
    settings = _settings(tmp_path, {})
    (instrument,) = settings.universe
    source = build_source(settings)
    for table in sorted(source.tables):
        import_partition(source, settings, table, instrument, DAY, "test")
    rebuild_instrument_day(source, settings, instrument, DAY)
    validation = validation_task(source, settings, instrument, DAY, None)
    row = validation.row
    if bad is None:
        expected = checksum_columns(ChecksumFigures(MESSAGES + 1, 0, 0, None))
    else:
        line = rendered.message_lines[bad]
        expected = checksum_columns(ChecksumFigures(bad + 2, 1, 0, ChecksumMismatch(str(path), line, _received(line))))
    assert {name: row[name] for name in expected} == expected
    # The day's HTML report shows them as the row holds them.
    text = render_report(DAY, [validation], [])
    shown = dict(re.findall(r"<tr><th>((?:exchange checksum|first checksum)[^<]*)</th><td>([^<]*)</td></tr>", text))
    assert shown == {
        "exchange checksums checked": str(expected["checksums_checked"]),
        "exchange checksum mismatches": str(expected["checksum_mismatches"]),
        "exchange checksums not checkable": str(expected["checksums_unchecked"]),
        "first checksum mismatch: file": html.escape(str(expected["first_checksum_mismatch_file"] or "–")),
        "first checksum mismatch: line": str(expected["first_checksum_mismatch_line"] or "–"),
    }

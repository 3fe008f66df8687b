"""Synthetic days written as Binance captures (`vendors/synthetic/capture_writer.py`): the files
verify with no gap and every bookTicker (the ground truth) matching, also with a bookTicker at every
change of the true top, a capture of two days replays across midnight, and the capture source's
rebuilt books equal the ground truth at every bookTicker.
Also: the writers' output does not depend on their batch sizes (Tardis included)."""

from __future__ import annotations

import datetime as dt
import gzip
import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from market_pipeline.core.lake.paths import PARTITION_FILE, books_partition_dir
from market_pipeline.vendors.binance.verify import verify_capture
from market_pipeline.vendors.synthetic import day_files, tardis_format
from market_pipeline.vendors.synthetic.capture_writer import (
    binance_names,
    capture_file_name,
    write_capture_day,
    write_capture_days,
)
from market_pipeline.vendors.synthetic.config import SyntheticSettings
from market_pipeline.vendors.synthetic.generate import generate_day
from market_pipeline_tests.support.cadence import TEST_SNAPSHOT_INTERVAL_MS

pytestmark = pytest.mark.slow  # four synthetic days rendered as captures and rebuilt: not in `make test-quick`

DAYS = [dt.date(2024, 3, 1), dt.date(2024, 3, 2)]
SPOT_KEY, USDM_KEY = "BINANCE:BTC-USDT", "BINANCE_FUTURES:BTC-USDT-PERP"
SCALE = 0.01


SNAPSHOTS_PER_DAY = SyntheticSettings(
    snapshot_interval_ms=TEST_SNAPSHOT_INTERVAL_MS
).snapshots_per_day  # vendor snapshots, and so bookTickers, a day


def _default_settings():
    from market_pipeline.settings import load_settings

    return load_settings()


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> dict[str, object]:
    """Two synthetic days of both default instruments (small profile, scale 0.01), and their captures:
    spot as one capture over both days, futures one day."""
    import os

    root = tmp_path_factory.mktemp("synthetic_capture")
    saved, cwd = {k: os.environ.pop(k) for k in list(os.environ) if k.startswith("PIPELINE_")}, os.getcwd()
    os.chdir(root)  # the committed defaults, no stray .env
    try:
        settings = _default_settings()
    finally:
        os.chdir(cwd)
        os.environ.update(saved)
    synthetic = settings.synthetic.model_copy(
        update={"scale": SCALE, "snapshot_interval_ms": TEST_SNAPSHOT_INTERVAL_MS}
    )
    instruments = {i.key: i for i in settings.universe}
    for instrument in instruments.values():
        for day in DAYS:
            generate_day(instrument, day, synthetic, root / "work", scale=SCALE)
    captures = root / "captures"
    spot = write_capture_days(root / "work", instruments[SPOT_KEY], DAYS, captures)
    usdm = write_capture_days(root / "work", instruments[USDM_KEY], DAYS[:1], captures)
    return {"root": root, "captures": captures, "instruments": instruments, "written": {SPOT_KEY: spot, USDM_KEY: usdm}}


def _truth(path: Path) -> pl.DataFrame:
    return pl.read_parquet(path)


def _trades(root: Path, instrument, day) -> int:
    return pl.read_parquet(day_files.day_files(root, instrument, day).trades).height


def test_names(generated):
    spot, usdm = generated["instruments"][SPOT_KEY], generated["instruments"][USDM_KEY]
    assert binance_names(spot) == ("spot", "BTCUSDT") and binance_names(usdm) == ("usdm", "BTCUSDT")
    assert capture_file_name(usdm, DAYS[0]) == "binance_usdm_btcusdt_20240301.gz"
    written = generated["written"]
    names = [d.path.name for d in written[SPOT_KEY]]
    assert names == ["binance_spot_btcusdt_20240301.gz", "binance_spot_btcusdt_20240302.gz"]


def test_lines_are_binance_messages_with_exact_decimals(generated):
    (day,) = generated["written"][USDM_KEY]
    with gzip.open(day.path, "rt") as fh:
        head = [fh.readline() for _ in range(3)]
    stamps, messages = zip(*(line.split(" ", 1) for line in head), strict=True)
    diff, snapshot, ticker = (json.loads(m) for m in messages)
    assert diff["stream"] == "btcusdt@depth@0ms" and diff["data"]["e"] == "depthUpdate"
    data = diff["data"]
    assert data["U"] == data["u"] == day.first_update_id and data["pu"] == data["u"] - 1
    assert {"E", "T", "s", "b", "a"} <= set(data) and data["s"] == "BTCUSDT"
    # The REST snapshot holds the opening message's levels, best first, on the instrument's grid.
    assert snapshot["lastUpdateId"] == day.first_update_id and {"E", "T"} <= set(snapshot)
    bids = [p for p, _ in snapshot["bids"]]
    assert bids == sorted(bids, key=float, reverse=True) and len(bids) == len([b for b in data["b"] if b[1] != "0.000"])
    assert all(len(p.split(".")[1]) == 1 and len(q.split(".")[1]) == 3 for p, q in snapshot["bids"] + snapshot["asks"])
    assert ticker["stream"] == "btcusdt@bookTicker" and ticker["data"]["u"] == day.first_update_id
    assert ticker["data"]["b"] == snapshot["bids"][0][0] and ticker["data"]["A"] == snapshot["asks"][0][1]
    assert len(set(stamps)) == 1 and int(stamps[0]) // 10**9 == 1709251200  # received at midnight


@pytest.mark.parametrize("key", [SPOT_KEY, USDM_KEY])
def test_verify_capture_finds_no_gap_and_every_ticker_matching(generated, key):
    written = generated["written"][key]
    report = verify_capture([d.path for d in written])
    truth_rows = sum(_truth(d.truth_book_path).height for d in written)
    instrument = generated["instruments"][key]
    trades = sum(_trades(generated["root"] / "work", instrument, day) for day in DAYS[: len(written)])
    assert (report["gaps"], report["ticker_mismatches"], report["resyncs"]) == (0, 0, 0)
    assert report["ticker_checks"] == truth_rows == len(written) * SNAPSHOTS_PER_DAY
    assert report["trades"] == trades and report["diffs"] == report["applied"] == sum(d.diffs for d in written)
    assert report["in_sync_at_end"] and report["market"] == ("spot" if key == SPOT_KEY else "usdm")
    assert (report["tick_size"], report["lot_size"]) == (str(instrument.tick_size), str(instrument.lot_size))


def test_a_second_day_continues_the_update_ids(generated):
    first, second = generated["written"][SPOT_KEY]
    assert second.first_update_id == first.end.last_update_id + 1
    # The second day's opening diff also removes the first day's last levels it does not have.
    with gzip.open(second.path, "rt") as fh:
        opening = json.loads(fh.readline().split(" ", 1)[1])["data"]
    removed = [price for price, quantity in opening["b"] + opening["a"] if float(quantity) == 0]
    kept = first.end.book.join(
        pl.DataFrame({"price": [float(p) for p, q in opening["b"] + opening["a"] if float(q) > 0]}), on="price"
    )
    assert len(removed) == first.end.book.height - kept.height > 0


def _changes(tops: pl.DataFrame) -> pl.DataFrame:
    """The tops that differ from the one before them, found apart from the writer (numpy)."""
    values = tops.drop("sequence_number").to_numpy()
    return tops.filter(pl.Series(np.r_[True, (values[1:] != values[:-1]).any(axis=1)]))


def test_every_top_capture_sends_a_ticker_at_each_change_of_the_true_top(generated, tmp_path, monkeypatch):
    root, instrument = generated["root"] / "work", generated["instruments"][USDM_KEY]
    whole = write_capture_day(root, instrument, DAYS[0], tmp_path / "whole", every_top=True)
    tops = pl.read_parquet(day_files.day_files(root, instrument, DAYS[0]).tops)
    with gzip.open(whole.path, "rt") as fh:
        tickers = [json.loads(line.split(" ", 1)[1])["data"] for line in fh if "@bookTicker" in line]
    sent = [(t["u"], *(float(t[key]) for key in "bBaA")) for t in tickers]
    assert sent == [(seq + whole.update_id_offset, *top) for seq, *top in _changes(tops).iter_rows()]
    assert whole.tickers == len(sent) and 0 < len(sent) < tops.height  # not every message moves the top
    report = verify_capture([whole.path])
    assert (report["gaps"], report["ticker_mismatches"], report["ticker_checks"]) == (0, 0, whole.tickers)
    # In small batches, each batch's first top compared with the last of the batch before: the same file.
    monkeypatch.setattr(day_files, "DELTA_BATCH_ROWS", 997)
    monkeypatch.setattr(day_files, "SIDE_BATCH_ROWS", 101)
    small = write_capture_day(root, instrument, DAYS[0], tmp_path / "small", every_top=True)
    assert gzip.decompress(small.path.read_bytes()) == gzip.decompress(whole.path.read_bytes())


def test_output_does_not_depend_on_the_batch_size(generated, tmp_path, monkeypatch):
    root, instrument = generated["root"] / "work", generated["instruments"][SPOT_KEY]
    first, second = generated["written"][SPOT_KEY]
    tardis_whole = tardis_format.write_tardis_day(root, instrument, DAYS[0], tmp_path / "whole", "binance", "BTCUSDT")
    monkeypatch.setattr(day_files, "DELTA_BATCH_ROWS", 997)
    monkeypatch.setattr(day_files, "SIDE_BATCH_ROWS", 9_973)
    monkeypatch.setattr(tardis_format, "SIDE_BATCH_ROWS", 31)
    small = write_capture_day(root, instrument, DAYS[1], tmp_path, first.end)
    assert gzip.decompress(small.path.read_bytes()) == gzip.decompress(second.path.read_bytes())
    tardis_small = tardis_format.write_tardis_day(root, instrument, DAYS[0], tmp_path / "small", "binance", "BTCUSDT")
    for data_type, path in tardis_whole.files.items():
        assert gzip.decompress(tardis_small.files[data_type].read_bytes()) == gzip.decompress(path.read_bytes())


def _import_and_rebuild(settings, instrument, day):
    from market_pipeline.defs.books.assets import rebuild_instrument_day
    from market_pipeline.defs.common.importer import import_partition
    from market_pipeline.vendors.registry import build_source

    source = build_source(settings)
    for table in ("trades", "book_delta_v2", "depth_snapshot", "book", "book_ticker"):
        import_partition(source, settings, table, instrument, day, "test")
    return rebuild_instrument_day(source, settings, instrument, day).result


def test_capture_source_rebuilds_the_ground_truth_at_every_book_ticker(generated, monkeypatch, data_dir):
    """PIPELINE_SOURCE=capture over the two-day spot capture and the futures day: after every
    message the vendor snapshotted, the rebuilt book (top 20 levels) is the true one. And the
    metrics' pass the rebuild stored beside the books (`DeltaPassStream`, ranking as the rows are
    written) is `update_ranks.delta_pass`'s, figure for figure: the metrics read no delta again."""
    monkeypatch.setenv("PIPELINE_SOURCE", "capture")
    monkeypatch.setenv("PIPELINE_CAPTURE_DIR", str(generated["captures"]))
    monkeypatch.setenv("PIPELINE_INSTRUMENTS", f"{SPOT_KEY},{USDM_KEY}")
    monkeypatch.setenv("PIPELINE_BOOK__SAMPLE_INTERVAL_MS", "0")  # a row after every diff
    settings = _default_settings()
    for key, written in generated["written"].items():
        instrument = next(i for i in settings.universe if i.key == key)
        for day, capture in zip(DAYS, written, strict=False):
            result = _import_and_rebuild(settings, instrument, day)
            c = result.counters
            assert (c["gaps"], c["ticker_mismatches"]) == (0, 0) and result.in_sync_at_end
            assert c["ticker_checks"] == SNAPSHOTS_PER_DAY
            path = books_partition_dir(settings.lake_dir, instrument.exchange, instrument.symbol, day) / PARTITION_FILE
            # The opening diff line comes before the REST snapshot, so its own row shows the book
            # still empty; the snapshot row after it shows the book after that diff (buffered, then
            # replayed on the snapshot). The last row at each update id is the book after it.
            books = pl.read_parquet(path).unique("sequence_number", keep="last", maintain_order=True)
            truth = (
                _truth(capture.truth_book_path)
                .unique("sequence_number", keep="first", maintain_order=True)
                .with_columns(pl.col("sequence_number") + capture.update_id_offset)
            )
            rows = truth.join(books, on="sequence_number", how="left", suffix="_rebuilt")
            assert rows.height == truth.height > 1000 and rows["synced"].all()
            for side in ("bid", "ask"):
                for i in range(20):
                    for field in ("price", "size"):
                        name = f"{side}_{i}_{field}"
                        ours = rows[f"{name}_rebuilt"].cast(pl.Float64).fill_null(-1.0).to_numpy()
                        assert np.array_equal(ours, rows[name].fill_null(-1.0).to_numpy()), (key, day, name)
            ranked = _stored_pass_is_the_pass(settings, instrument, day, path)
            assert ranked > 0 or day != DAYS[0]  # a day resumed from a checkpoint has no snapshot row
            # The bookTickers were sorted in the data dir's scratch, which the rebuild removed.
            assert (settings.data_dir / "tmp").is_dir() and not list((settings.data_dir / "tmp").glob("capture-*"))


def _stored_pass_is_the_pass(settings, instrument, day, books) -> int:
    """Assert the stored pass equals the metrics' own pass over the files; the deltas it ranked."""
    from market_pipeline.core.day_clock import day_start_ns
    from market_pipeline.core.lake.paths import books_delta_pass_path, raw_partition_dir
    from market_pipeline.core.quality.delta_pass_stream import read_delta_pass
    from market_pipeline.core.quality.microstructure import SKEW_SAMPLE_ROWS
    from market_pipeline.core.quality.update_ranks import delta_pass

    ex, sym = instrument.exchange, instrument.symbol
    deltas = raw_partition_dir(settings.lake_dir, "book_delta_v2", ex, sym, day) / PARTITION_FILE
    figures = (instrument.tick_size, settings.book.depth, day_start_ns(day), SKEW_SAMPLE_ROWS)
    stored = read_delta_pass(books_delta_pass_path(settings.lake_dir, ex, sym, day), books, deltas, *figures)
    expected = delta_pass(books, deltas, *figures)
    assert stored is not None, (instrument.key, day)
    assert stored.rank_counts == expected.rank_counts
    assert stored.hourly.equals(expected.hourly)
    assert stored.skew_sample_seconds == expected.skew_sample_seconds
    return sum(stored.rank_counts)

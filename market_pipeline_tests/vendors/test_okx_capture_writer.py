"""A synthetic day written as an OKX capture (`vendors/synthetic/okx_capture_writer.py`): it
verifies under OKX's rules with every `bbo-tbt` (the ground truth) agreeing, a dropped message
breaks OKX's chain where it was dropped, and the `okx_capture` source's tables and its generic
replay give the ground truth back at every vendor snapshot."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import polars as pl
import pytest

from market_pipeline.core.instruments import Instrument, InstrumentSpec
from market_pipeline.vendors.okx.source import OkxCaptureSource
from market_pipeline.vendors.registry import verify_capture
from market_pipeline.vendors.synthetic.capture_writer import write_capture_day
from market_pipeline.vendors.synthetic.config import SyntheticSettings
from market_pipeline.vendors.synthetic.okx_capture_writer import OkxLines, okx_names
from market_pipeline.vendors.synthetic.reference import write_reference_capture
from market_pipeline_tests.support.cadence import TEST_SNAPSHOT_INTERVAL_MS
from market_pipeline_tests.support.capture_truth import TOP, rebuilt_at_truth

pytestmark = pytest.mark.slow  # a synthetic day generated and rendered: not in `make test-quick`

DAY = dt.date(2024, 3, 1)
SCALE = 0.01
SPOT = Instrument(
    exchange="OKX", symbol="BTC-USDT", spec=InstrumentSpec(tick_size=Decimal("0.1"), lot_size=Decimal("0.00000001"))
)


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    root = tmp_path_factory.mktemp("okx_synthetic")
    settings = SyntheticSettings(scale=SCALE, snapshot_interval_ms=TEST_SNAPSHOT_INTERVAL_MS)
    day = write_reference_capture(settings, SPOT, DAY, root / "work", root / "captures")
    return root, day


def test_names():
    perp = SPOT.model_copy(update={"symbol": "BTC-USDT-PERP"})
    assert okx_names(SPOT) == ("spot", "BTC-USDT") and okx_names(perp) == ("swap", "BTC-USDT-SWAP")
    with pytest.raises(ValueError, match="OKX spot pairs and perpetuals only"):
        okx_names(SPOT.model_copy(update={"exchange": "BINANCE"}))


def test_the_day_verifies_with_every_quote_agreeing(written):
    _, day = written
    assert day.path.name == "okx_spot_btc-usdt_20240301.gz"
    figures = verify_capture([day.path])
    truth = pl.read_parquet(day.truth_book_path)
    assert (figures["exchange"], figures["symbol"], figures["market"]) == ("OKX", "BTC-USDT", "spot")
    assert figures["snapshots"] == 1 and figures["applied"] == day.diffs > 0
    assert figures["gaps"] == figures["ticker_mismatches"] == figures["unsynced_at_end"] == 0
    assert figures["ticker_checks"] == day.tickers == truth.height
    assert figures["trades"] == day.trades > 0
    # OKX's checksum on the snapshot and every update, each agreeing with the replayed book.
    assert (figures["checksums_checked"], figures["checksum_mismatches"], figures["checksums_unchecked"]) == (
        day.diffs + 1,
        0,
        0,
    )


def test_a_dropped_message_breaks_the_chain_where_it_was_dropped(written, tmp_path):
    root, day = written
    lost = day.first_update_id + day.diffs // 2
    damaged = write_capture_day(root / "work", SPOT, DAY, tmp_path, renderer=OkxLines, dropped=[lost])
    figures = verify_capture([damaged.path])
    assert damaged.diffs == day.diffs - 1
    assert figures["gaps"] == 1 and figures["resyncs"] == 0
    assert figures["first_bad_update"]["reason"] == "sequence break"
    assert figures["first_bad_update"]["expected_prev_seq_id"] == lost - 1
    assert figures["first_bad_update"]["prev_seq_id"] == lost
    assert figures["ticker_mismatches"] == 0  # unsynced after the break: nothing compared


def test_a_wrong_level_is_named_at_its_checksum(written, tmp_path):
    """A level changed in one update (its size), the chain intact: OKX's checksum of that very
    message disagrees with the replayed book, and verify-capture names its line."""
    import gzip

    _, day = written
    with gzip.open(day.path, "rt") as lines:
        text = lines.readlines()
    updates = [n for n, line in enumerate(text) if '"action":"update"' in line and '"bids":[["' in line]
    bad = updates[len(updates) // 2]
    first_size = text[bad].index('"bids":[["') + len('"bids":[["')
    size_at = text[bad].index('","', first_size) + 3
    text[bad] = text[bad][:size_at] + "9" + text[bad][size_at:]  # a digit more in the first bid's size
    damaged = tmp_path / day.path.name
    with gzip.open(damaged, "wt") as out:
        out.writelines(text)
    figures = verify_capture([damaged])
    assert figures["checksum_mismatches"] == figures["gaps"] == 1  # unsynced from there: the rest unchecked
    assert (figures["first_bad_update"]["reason"], figures["first_bad_update"]["line"]) == ("checksum", bad + 1)


def test_the_source_replays_the_true_book_at_every_vendor_snapshot(written, tmp_path):
    root, day = written
    source = OkxCaptureSource(root / "captures", tmp_path / "cache", tmp_path / "lake")
    (deltas,) = source.fetch("book_delta_v2", SPOT, DAY)
    raw = pl.read_parquet(deltas)
    assert raw["sequence_number"].n_unique() == day.diffs + 1  # the snapshot and every update
    assert raw.filter(pl.col("is_snapshot"))["sequence_number"].unique().to_list() == [day.first_update_id]
    (trades,) = source.fetch("trades", SPOT, DAY)
    assert pl.read_parquet(trades).height == day.trades
    synced, joined = rebuilt_at_truth(source, SPOT, DAY, day.truth_book_path, tmp_path)
    assert synced
    assert joined.height == pl.read_parquet(day.truth_book_path).height > 0
    for column in TOP:
        assert (joined[column] == joined[f"{column}_rebuilt"]).all(), column


def test_a_day_of_another_exchange_is_refused(tmp_path):
    binance = SPOT.model_copy(update={"exchange": "BINANCE"})
    with pytest.raises(ValueError, match="BINANCE:BTC-USDT: an OKX capture is written for OKX"):
        write_capture_day(tmp_path, binance, DAY, tmp_path / "out", renderer=OkxLines)

"""A synthetic day written as a Kraken capture (`vendors/synthetic/kraken_capture_writer.py`): it
verifies under Kraken's rules with every checksum agreeing, a dropped message is named at the next
update's checksum, and the `kraken_capture` source's tables and its generic replay give the ground
truth's best 10 levels back at every vendor snapshot."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal

import polars as pl
import pytest

from market_pipeline.core.instruments import Instrument, InstrumentSpec
from market_pipeline.vendors.kraken.source import KrakenCaptureSource
from market_pipeline.vendors.registry import verify_capture
from market_pipeline.vendors.synthetic.capture_writer import DELTA_COLUMNS, write_capture_day
from market_pipeline.vendors.synthetic.config import SyntheticSettings
from market_pipeline.vendors.synthetic.day_files import day_files, message_batches
from market_pipeline.vendors.synthetic.kraken_capture_writer import DEPTH, KrakenLines, kraken_pair
from market_pipeline.vendors.synthetic.reference import write_reference_capture
from market_pipeline_tests.support.cadence import TEST_SNAPSHOT_INTERVAL_MS
from market_pipeline_tests.support.capture_truth import rebuild_messages

pytestmark = pytest.mark.slow  # a synthetic day generated and rendered: not in `make test-quick`

DAY = dt.date(2024, 3, 1)
SCALE = 0.01
PAIR = Instrument(
    exchange="KRAKEN", symbol="BTC-USD", spec=InstrumentSpec(tick_size=Decimal("0.1"), lot_size=Decimal("0.00000001"))
)
LEVELS = [f"{side}_{n}_{field}" for side in ("bid", "ask") for n in range(DEPTH) for field in ("price", "size")]


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    root = tmp_path_factory.mktemp("kraken_synthetic")
    settings = SyntheticSettings(scale=SCALE, snapshot_interval_ms=TEST_SNAPSHOT_INTERVAL_MS)
    day = write_reference_capture(settings, PAIR, DAY, root / "work", root / "captures")
    return root, day


def _sent(root, day) -> pl.DataFrame:
    """The update messages the capture holds (u, recv, text), rendered again from the day."""
    files = day_files(root / "work", PAIR, DAY)
    lines = KrakenLines(PAIR, files.deltas)
    rendered = [
        lines.diffs(batch.with_columns(u=pl.col("sequence_number") + day.update_id_offset))
        for batch in message_batches(files.deltas, DELTA_COLUMNS)
    ]
    return pl.concat(rendered).filter(pl.col("text").is_not_null() & (pl.col("u") != day.first_update_id))


def _prices(text: str) -> set[tuple[str, str]]:
    entry = json.loads(text)["data"][0]
    return {(side, str(level["price"])) for side in ("bids", "asks") for level in entry[side]}


def test_names():
    assert kraken_pair(PAIR) == "BTC/USD"
    with pytest.raises(ValueError, match="Kraken spot pairs only"):
        kraken_pair(PAIR.model_copy(update={"exchange": "OKX"}))


def test_the_day_verifies_with_every_checksum_agreeing(written):
    _, day = written
    assert day.path.name == "kraken_spot_btcusd_20240301.gz"
    figures = verify_capture([day.path])
    assert (figures["exchange"], figures["symbol"], figures["market"]) == ("KRAKEN", "BTC-USD", "spot")
    assert figures["snapshots"] == 1 and figures["applied"] == day.diffs > 0
    assert figures["checksums_checked"] == day.diffs + 1  # the snapshot's and every update's
    assert figures["checksum_mismatches"] == figures["gaps"] == figures["unsynced_at_end"] == 0
    assert figures["first_bad_update"] is None
    assert figures["trades"] == day.trades > 0
    assert day.tickers == figures["ticker_checks"] == 0  # no top-of-book stream


def test_a_dropped_message_is_named_at_the_next_checksum(written, tmp_path):
    root, day = written
    sent = _sent(root, day)
    assert sent.height == day.diffs
    # A message in the middle whose next message touches other levels: the next checksum shows it.
    k = next(
        i
        for i in range(sent.height // 2, sent.height - 1)
        if not _prices(sent["text"][i]) & _prices(sent["text"][i + 1])
    )
    lost = sent["u"][k]
    damaged = write_capture_day(root / "work", PAIR, DAY, tmp_path, renderer=KrakenLines, dropped=[lost])
    figures = verify_capture([damaged.path])
    assert damaged.diffs == day.diffs - 1
    assert figures["checksum_mismatches"] == figures["gaps"] == 1 and figures["resyncs"] == 0
    bad = figures["first_bad_update"]
    assert bad["reason"] == "checksum" and bad["received_time"] == sent["recv"][k + 1]
    assert figures["dropped_after_gap"] == day.diffs - 1 - (k + 1)  # unsynced until a snapshot: none comes


def test_the_source_replays_the_true_book_at_every_vendor_snapshot(written, tmp_path):
    root, day = written
    source = KrakenCaptureSource(root / "captures", tmp_path / "cache", tmp_path / "lake")
    (trades,) = source.fetch("trades", PAIR, DAY)
    assert pl.read_parquet(trades).height == day.trades
    _, books = rebuild_messages(source, PAIR, DAY, tmp_path, depth=DEPTH)
    assert books.height == day.diffs + 1 and books["synced"].all()
    rebuilt = books.select("received_time", *(pl.col(c).cast(pl.Float64) for c in LEVELS)).sort("received_time")
    # Each true book at the receive time of its message: the capture's book after its last line by then.
    received = pl.read_parquet(day_files(root / "work", PAIR, DAY).deltas, columns=["sequence_number", "received_time"])
    truth = (
        pl.read_parquet(day.truth_book_path)
        .select("sequence_number", *LEVELS)
        .join(received.unique("sequence_number"), on="sequence_number")
        .sort("received_time")
    )
    joined = truth.join_asof(rebuilt, on="received_time", strategy="backward", suffix="_rebuilt")
    assert joined.height == pl.read_parquet(day.truth_book_path).height > 0
    for column in LEVELS:
        assert (joined[column].eq_missing(joined[f"{column}_rebuilt"])).all(), column


def test_the_source_checks_kraken_checksums_of_the_day(written, tmp_path):
    """`exchange_checksums`, what validation_reports and the exchange_checksums check read: every
    checksum of the day's book messages checked, none disagreeing."""
    root, day = written
    source = KrakenCaptureSource(root / "captures", tmp_path / "cache", tmp_path / "lake")
    figures = source.exchange_checksums(PAIR, DAY)
    assert figures is not None
    assert (figures.checked, figures.mismatches, figures.unchecked) == (day.diffs + 1, 0, 0)  # + the snapshot's
    assert figures.first_mismatch is None
    assert source.exchange_checksums(PAIR, DAY + dt.timedelta(days=1)) is None  # no capture that day

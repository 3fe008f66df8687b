"""A synthetic day written as a Bybit capture (`vendors/synthetic/bybit_capture_writer.py`): it
verifies under Bybit's rules with every `orderbook.1` quote (the ground truth) agreeing, a dropped
message breaks Bybit's `u` chain where it was dropped (verify-capture names it), and the
`bybit_capture` source's tables and its generic replay give the ground truth back at every
vendor snapshot."""

from __future__ import annotations

import datetime as dt
import functools
import gzip
from decimal import Decimal

import polars as pl
import pytest

from market_pipeline.core.instruments import Instrument, InstrumentSpec
from market_pipeline.vendors.bybit.source import BybitCaptureSource
from market_pipeline.vendors.registry import verify_capture
from market_pipeline.vendors.synthetic.bybit_capture_writer import TOPIC_U_OFFSET, BybitLines, bybit_names
from market_pipeline.vendors.synthetic.capture_writer import write_capture_day
from market_pipeline.vendors.synthetic.config import SyntheticSettings
from market_pipeline.vendors.synthetic.reference import write_reference_capture
from market_pipeline_tests.support.cadence import TEST_SNAPSHOT_INTERVAL_MS
from market_pipeline_tests.support.capture_truth import TOP, rebuilt_at_truth
from market_pipeline_tests.support.verify_capture_cli import verify_capture_cli

pytestmark = pytest.mark.slow  # a synthetic day generated and rendered: not in `make test-quick`

DAY = dt.date(2024, 3, 1)
SCALE = 0.01
PERP = Instrument(
    exchange="BYBIT",
    symbol="BTC-USDT-PERP",
    spec=InstrumentSpec(tick_size=Decimal("0.1"), lot_size=Decimal("0.001")),
)


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    root = tmp_path_factory.mktemp("bybit_synthetic")
    settings = SyntheticSettings(scale=SCALE, snapshot_interval_ms=TEST_SNAPSHOT_INTERVAL_MS)
    day = write_reference_capture(settings, PERP, DAY, root / "work", root / "captures")
    return root, day


def test_names():
    spot = PERP.model_copy(update={"symbol": "BTC-USDT"})
    inverse = PERP.model_copy(update={"symbol": "BTC-USD-PERP"})
    assert [bybit_names(i) for i in (spot, PERP, inverse)] == [
        ("spot", "BTCUSDT"),
        ("linear", "BTCUSDT"),
        ("inverse", "BTCUSD"),
    ]
    with pytest.raises(ValueError, match="Bybit spot pairs and perpetuals only"):
        bybit_names(PERP.model_copy(update={"symbol": "BTC-USDT-251226"}))


def test_the_day_verifies_with_every_quote_agreeing(written, capsys):
    _, day = written
    assert day.path.name == "bybit_linear_btcusdt_20240301.gz"
    code, figures = verify_capture_cli(capsys, day.path)  # `market-pipeline verify-capture`
    assert code == 0
    truth = pl.read_parquet(day.truth_book_path)
    assert (figures["exchange"], figures["symbol"], figures["market"]) == ("BYBIT", "BTCUSDT", "linear")
    assert figures["snapshots"] == 1 and figures["applied"] == day.diffs > 0
    assert figures["gaps"] == figures["ticker_mismatches"] == figures["unsynced_at_end"] == 0
    assert figures["sequence_resets"] == 0 and figures["first_bad_update"] is None
    assert figures["ticker_checks"] == day.tickers == truth.height
    assert figures["trades"] == day.trades > 0


def test_a_dropped_message_breaks_the_chain_where_it_was_dropped(written, tmp_path, capsys):
    root, day = written
    lost = day.first_update_id + day.diffs // 2
    damaged = write_capture_day(root / "work", PERP, DAY, tmp_path, renderer=BybitLines, dropped=[lost])
    code, figures = verify_capture_cli(capsys, damaged.path)
    assert code == 1
    assert damaged.diffs == day.diffs - 1
    assert figures["gaps"] == 1 and figures["resyncs"] == 0 and figures["unsynced_at_end"] == 1
    bad = figures["first_bad_update"]
    assert bad["reason"] == "sequence break"
    assert (bad["expected_u"], bad["u"]) == (lost + TOPIC_U_OFFSET, lost + 1 + TOPIC_U_OFFSET)
    assert bad["file"] == str(damaged.path) and f'"seq":{lost + 1}}}' in _lines(damaged.path)[bad["line"] - 1]
    assert figures["ticker_mismatches"] == 0  # unsynced after the break: nothing compared


def test_a_service_restart_resyncs_the_book_with_every_quote_agreeing(written, tmp_path):
    root, day = written
    restart = day.first_update_id + day.diffs // 3  # its message is sent as a `u` = 1 snapshot
    renderer = functools.partial(BybitLines, restarts=[restart])
    restarted = write_capture_day(root / "work", PERP, DAY, tmp_path / "captures", renderer=renderer)
    (sent,) = [line for line in _lines(restarted.path) if f'"seq":{restart}}}' in line and "orderbook.1000" in line]
    assert '"type":"snapshot"' in sent and f'"u":1,"seq":{restart}}}' in sent
    figures = verify_capture([restarted.path])
    assert (figures["snapshots"], figures["sequence_resets"], figures["resyncs"]) == (2, 1, 1)
    assert figures["applied"] == day.diffs - 1  # the restarted message is the snapshot
    assert figures["gaps"] == figures["ticker_mismatches"] == figures["unsynced_at_end"] == 0
    assert figures["ticker_checks"] == day.tickers and figures["first_bad_update"] is None
    source = BybitCaptureSource(tmp_path / "captures", tmp_path / "cache", tmp_path / "lake")
    (deltas,) = source.fetch("book_delta_v2", PERP, DAY)
    snapshots = pl.read_parquet(deltas).filter(pl.col("is_snapshot"))
    assert snapshots["sequence_number"].unique(maintain_order=True).to_list() == [day.first_update_id, restart]
    synced, joined = rebuilt_at_truth(source, PERP, DAY, day.truth_book_path, tmp_path)
    assert synced and joined.height > 0
    for column in TOP:
        assert (joined[column] == joined[f"{column}_rebuilt"]).all(), column


def _lines(path) -> list[str]:
    with gzip.open(path, "rt") as lines:
        return list(lines)


def test_the_source_replays_the_true_book_at_every_vendor_snapshot(written, tmp_path):
    root, day = written
    source = BybitCaptureSource(root / "captures", tmp_path / "cache", tmp_path / "lake")
    assert list(source.manifest()["instruments"]) == [PERP.key]
    (deltas,) = source.fetch("book_delta_v2", PERP, DAY)
    raw = pl.read_parquet(deltas)
    assert raw["sequence_number"].n_unique() == day.diffs + 1  # the snapshot and every delta, by seq
    assert raw.filter(pl.col("is_snapshot"))["sequence_number"].unique().to_list() == [day.first_update_id]
    (tickers,) = source.fetch("book_ticker", PERP, DAY)
    assert pl.read_parquet(tickers).height == day.tickers
    (trades,) = source.fetch("trades", PERP, DAY)
    assert pl.read_parquet(trades).height == day.trades
    synced, joined = rebuilt_at_truth(source, PERP, DAY, day.truth_book_path, tmp_path)
    assert synced
    assert joined.height == pl.read_parquet(day.truth_book_path).height > 0
    for column in TOP:
        assert (joined[column] == joined[f"{column}_rebuilt"]).all(), column


def test_a_day_of_another_exchange_is_refused(tmp_path):
    okx = PERP.model_copy(update={"exchange": "OKX"})
    with pytest.raises(ValueError, match="OKX:BTC-USDT-PERP: a Bybit capture is written for Bybit"):
        write_capture_day(tmp_path, okx, DAY, tmp_path / "out", renderer=BybitLines)

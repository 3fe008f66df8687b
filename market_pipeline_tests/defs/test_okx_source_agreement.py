"""A bought OKX day checked against an OKX capture (issue 35 item 5): a synthetic Crypto Lake
OKX day damaged on demand (dropped messages and trades) is the primary, its undamaged day rendered
as an OKX capture (`okx_capture`) the reference; `source_agreement` matches them by OKX's `seqId`
and finds exactly the damage injected, by hour.

The smallest world that shows it: one instrument-day of OKX:BTC-USDT at scale 0.01, the tests'
cadence (a vendor snapshot, and so a `bbo-tbt` of the capture, a minute), one Dagster run of the
raw, books and agreement assets.
"""

from __future__ import annotations

import datetime as dt

import pytest

from market_pipeline_tests.support.agreement_run import counts_by_hour, hours_with, run_capture_reference

pytestmark = pytest.mark.slow  # one Dagster run of one instrument-day against a capture

DAY = dt.date(2024, 3, 1)
KEY = "OKX:BTC-USDT"
FAULTS = {"dropped_messages": 3, "dropped_trades": 2}


@pytest.fixture(scope="module")
def okx_agreement(tmp_path_factory):
    return run_capture_reference(tmp_path_factory.mktemp("okx_agreement"), KEY, "0.1", "okx_capture", FAULTS, DAY)


def test_the_okx_capture_is_the_reference_matched_by_seq_id(okx_agreement):
    result, daily, hourly, _, written = okx_agreement
    assert result.success
    (day,) = daily.rows(named=True)
    assert (day["instrument"], day["primary"], day["reference"], day["status"]) == (
        KEY,
        "synthetic",
        "okx_capture",
        "update_id",
    )
    assert hourly.height == 24
    # Every message of the capture (its snapshot and its updates) is a reference message.
    assert day["messages_reference"] == written.diffs + 1
    assert day["trades_reference"] == written.trades
    assert day["tickers"] == written.tickers > 0


def test_the_damage_is_found_exactly(okx_agreement):
    _, daily, hourly, faults, _ = okx_agreement
    (day,) = daily.rows(named=True)
    dropped = faults["dropped_messages"]
    assert day["messages_missing"] == len(dropped) == FAULTS["dropped_messages"]
    assert hours_with(hourly, "messages_missing") == counts_by_hour(DAY, [r["origin_time"] for r in dropped])
    assert day["messages_vendor"] == day["messages_reference"] - len(dropped)
    trades = faults["dropped_trades"]
    assert day["trades_missing"] == len(trades) == FAULTS["dropped_trades"]
    assert hours_with(hourly, "trades_missing") == counts_by_hour(DAY, [r["origin_time"] for r in trades])
    for column in (
        "messages_extra",
        "delayed_messages",
        "trades_extra",
        "trades_price_differs",
        "trades_size_differs",
        "trades_side_differs",
        "snapshots_differing",
    ):
        assert day[column] == 0, column
    # The vendor's book disagrees with the capture's quotes only in hours a message was dropped.
    assert set(hours_with(hourly, "tickers_differing")) <= set(counts_by_hour(DAY, [r["origin_time"] for r in dropped]))
    assert day["tickers_matched"] > 0 and day["book_instants"] > 0


def test_the_checks_fail_on_the_damage(okx_agreement):
    result, *_ = okx_agreement
    verdicts = {
        e.check_name: e.passed
        for e in result.get_asset_check_evaluations()
        if e.asset_key.to_user_string() == "source_agreement"
    }
    assert verdicts["messages_missing"] is False and verdicts["trades_missing"] is False

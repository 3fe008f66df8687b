"""A bought Kraken day checked against a Kraken capture (issue 35 item 5): a synthetic Crypto Lake
Kraken day damaged on demand (dropped messages and trades) is the primary, its undamaged day
rendered as a Kraken v2 capture at depth 10 (`kraken_capture`) the reference. Kraken numbers no
book message, so `source_agreement` matches them by exchange time (as a Tardis day): the dropped
trades are found exactly by trade id and hour, the dropped messages only where they leave the
vendor's rebuilt book differing from the capture's at a common sample instant (messages are not
counted by exchange time: null), and nothing else differs.

The smallest world that shows it: one instrument-day of KRAKEN:BTC-USD at scale 0.01, the tests'
cadence (a vendor snapshot and a sampled book a minute), one Dagster run of the raw, books and
agreement assets.
"""

from __future__ import annotations

import datetime as dt

import pytest

from market_pipeline_tests.support.agreement_run import counts_by_hour, hours, reference_agreement

pytestmark = pytest.mark.slow  # one Dagster run of one instrument-day against a capture

DAY = dt.date(2024, 3, 1)
KEY = "KRAKEN:BTC-USD"
FAULTS = {"dropped_messages": 3, "dropped_trades": 2}


@pytest.fixture(scope="module")
def kraken_agreement(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("kraken_agreement")
    spec = {"tick_size": "0.1", "lot_size": "0.00000001"}
    run = reference_agreement(tmp, KEY, spec, "kraken_capture", FAULTS, DAY)
    return run.result, run.daily, run.hourly, run.faults, run.written, tmp


def test_the_kraken_capture_is_the_reference_matched_by_exchange_time(kraken_agreement):
    result, daily, hourly, _, written, tmp = kraken_agreement
    assert result.success
    # Every row of the capture's tables was imported: none set aside by the raw checks.
    assert not list((tmp / "data" / "lake").rglob("rejected_rows.parquet"))
    (day,) = daily.rows(named=True)
    assert (day["instrument"], day["primary"], day["reference"], day["status"]) == (
        KEY,
        "synthetic",
        "kraken_capture",
        "exchange_time",
    )
    assert day.get("note") is None
    assert hourly.height == 24
    assert day["trades_reference"] == written.trades > 0
    assert day["tickers"] == written.tickers == 0  # Kraken's capture has no top-of-book stream
    for column in ("messages_reference", "messages_missing", "messages_extra", "snapshots_compared"):
        assert day[column] is None, column  # not measurable by exchange time
    assert day["book_instants"] > 0


def test_the_damage_is_found_exactly(kraken_agreement):
    _, daily, hourly, faults, *_ = kraken_agreement
    (day,) = daily.rows(named=True)
    trades = faults["dropped_trades"]
    assert day["trades_missing"] == len(trades) == FAULTS["dropped_trades"]
    assert hours(hourly, "trades_missing") == counts_by_hour(DAY, [r["origin_time"] for r in trades])
    assert day["trades_vendor"] == day["trades_reference"] - len(trades)
    for column in ("trades_extra", "trades_price_differs", "trades_size_differs", "trades_side_differs"):
        assert day[column] == 0, column
    # The two rebuilt books differ only in hours a message was dropped from the vendor's day.
    dropped_hours = set(counts_by_hour(DAY, [r["origin_time"] for r in faults["dropped_messages"]]))
    assert set(hours(hourly, "book_instants_differing")) <= dropped_hours
    # In this world the vendor's next snapshot repairs its book before the next sample: the capture's
    # book (Kraken's view of depth 10, truncation written out) equals it at every common instant.
    assert day["book_instants_differing"] == 0
    assert day["book_instants_unsynced"] == 0


def test_the_checks_fail_on_the_damage(kraken_agreement):
    result, *_ = kraken_agreement
    verdicts = {
        e.check_name: e.passed
        for e in result.get_asset_check_evaluations()
        if e.asset_key.to_user_string() == "source_agreement"
    }
    assert verdicts["trades_missing"] is False

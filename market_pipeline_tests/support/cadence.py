"""The tests' cheapest world: a synthetic vendor snapshot and a rebuilt book row a minute.

At the production default (100 ms) every instrument-day has 864,000 vendor snapshots and as many
sampled book rows, whatever the synthetic scale. Every test's environment has these variables
(the root conftest.py's hermetic fixtures); a test about the cadence sets its own, and counts that
depend on it are derived from the settings. Production defaults and `make bench` stay at 100 ms.
"""

from __future__ import annotations

TEST_SNAPSHOT_INTERVAL_MS = 60_000
TEST_CADENCE = {
    "PIPELINE_SYNTHETIC__SNAPSHOT_INTERVAL_MS": str(TEST_SNAPSHOT_INTERVAL_MS),
    "PIPELINE_BOOK__SAMPLE_INTERVAL_MS": "60000",
}

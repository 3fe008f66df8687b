"""What defs/common/dagster_compat.py relies on; a Dagster upgrade fails here first, on purpose."""

from __future__ import annotations

import dagster as dg

from market_pipeline.defs.common import dagster_compat


def test_the_shim_was_checked_against_this_dagster():
    minor = ".".join(dg.__version__.split(".")[:2])
    assert minor == dagster_compat.VERIFIED_DAGSTER, (
        f"Dagster {dg.__version__}: re-check defs/common/dagster_compat.py (is the target materialization "
        "type exported now? does the UI still need it?) and update VERIFIED_DAGSTER"
    )


def test_the_target_materialization_type_takes_a_record():
    record = dg.EventLogRecord(
        storage_id=7,
        event_log_entry=dg.EventLogEntry(
            error_info=None, level=20, user_message="", run_id="r1", timestamp=123.5, step_key=None, job_name=None
        ),
    )
    value = dagster_compat.target_materialization(record)
    assert (value.storage_id, value.run_id, value.timestamp) == (7, "r1", 123.5)
    evaluation = dg.AssetCheckEvaluation(
        asset_key=dg.AssetKey("a"), check_name="c", passed=True, target_materialization_data=value
    )
    assert evaluation.target_materialization_data == value

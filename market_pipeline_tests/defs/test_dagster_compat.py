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


def test_only_the_accepted_api_stability_warnings_are_filtered(tmp_path):
    """Loading the code location prints no Preview/Beta/Supersession notes (every Dagster process
    loads it), while any other warning still shows."""
    import subprocess
    import sys

    from market_pipeline_tests.support.project import subprocess_env

    script = (
        "import warnings, dagster as dg, market_pipeline.definitions\n"
        "warnings.warn('superseded on purpose', dg.SupersessionWarning)\n"
        "warnings.warn('a real problem', UserWarning)\n"
    )
    result = subprocess.run(
        [sys.executable, "-W", "always", "-c", script],
        env=subprocess_env(),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "UserWarning: a real problem" in result.stderr
    for category in ("PreviewWarning", "BetaWarning", "SupersessionWarning"):
        assert category not in result.stderr

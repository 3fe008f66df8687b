"""A warning logged in a loop shows a few times, not once per iteration (issue 24, item 3)."""

from __future__ import annotations

import subprocess
import sys

from market_pipeline_tests.support.project import subprocess_env


def test_a_repeated_warning_shows_at_most_five_times(tmp_path):
    code = (  # a fresh process, as the CLI and every Dagster process start: hardened first
        "import logging\n"
        "from market_pipeline.core.security.hardening import harden_process\n"
        "from market_pipeline.core.telemetry import telemetry\n"
        "harden_process()\n"
        "log = logging.getLogger('some.library')\n"
        "for i in range(1000):\n"
        "    log.warning('value %s is odd', i)\n"
        "log.warning('another warning')\n"
        "for i in range(7):\n"
        "    log.error('an error %s', i)\n"
        "for i in range(1000):  # the OpenTelemetry SDK's own warning, once per value it refuses\n"
        "    telemetry.observe('mdp_stage_duration_seconds', -1.0, stage='x')\n"
    )
    env = subprocess_env(PIPELINE_DATA_DIR=str(tmp_path), PIPELINE_METRICS__EXPORT_INTERVAL_SECONDS="3600")
    done = subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    odd = [line for line in lines if "is odd" in line]
    assert odd == [f"value {i} is odd" for i in range(4)] + [
        "value 4 is odd [logged 5 times; further repeats are not shown]"
    ]
    assert lines.count("another warning") == 1
    assert [line for line in lines if line.startswith("an error")] == [f"an error {i}" for i in range(7)]
    refused = [line for line in lines if "non-negative" in line]
    assert len(refused) == 5 and refused[-1].endswith("further repeats are not shown]")

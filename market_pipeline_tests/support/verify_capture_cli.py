"""`market-pipeline verify-capture` as a test runs it: the exit code and the JSON it printed."""

from __future__ import annotations

import json
from pathlib import Path

from market_pipeline.cli.main import main


def verify_capture_cli(capsys, *paths: Path) -> tuple[int, dict]:
    code = main(["verify-capture", *map(str, paths)])
    return code, json.loads(capsys.readouterr().out)

"""`market-pipeline verify-capture FILE ...`: exact replay of Binance captures, one JSON object out."""

from __future__ import annotations

import json
from pathlib import Path

from market_pipeline.cli.common import EXIT_FAILED, EXIT_OK, CliError
from market_pipeline.vendors.binance.capture_format import CaptureFormatError


def verify_capture_command(files: list[Path]) -> int:
    """Print the replay figures; exit 0 only when no bookTicker disagreed while in sync."""
    from market_pipeline.vendors.binance.verify import verify_capture

    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise CliError(f"capture file(s) not found: {', '.join(missing)}", EXIT_FAILED)
    try:
        result = verify_capture(files)
    except CaptureFormatError as exc:
        raise CliError(str(exc), EXIT_FAILED) from exc
    print(json.dumps(result))
    return EXIT_OK if result["ticker_mismatches"] == 0 else EXIT_FAILED

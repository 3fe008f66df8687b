"""`market-pipeline verify-capture FILE ...`: exact replay of exchange captures, one JSON object out."""

from __future__ import annotations

import json
from pathlib import Path

from market_pipeline.cli.common import EXIT_FAILED, EXIT_OK, CliError
from market_pipeline.vendors.capture_files import CaptureFormatError


def verify_capture_command(files: list[Path]) -> int:
    """Print the replay figures; exit 0 only when no oracle disagreed while in sync (Binance's
    bookTickers, Kraken's and OKX's checksums, OKX's and Bybit's top-of-book streams) and no
    update was found bad (`first_bad_update`: also an OKX or Bybit sequence break)."""
    from market_pipeline.vendors.registry import capture_exchange, verify_capture

    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise CliError(f"capture file(s) not found: {', '.join(missing)}", EXIT_FAILED)
    try:
        capture_exchange(files)
    except ValueError as exc:
        raise CliError(str(exc), EXIT_FAILED) from exc
    try:
        result = verify_capture(files)
    except CaptureFormatError as exc:  # every exchange's readers raise it
        raise CliError(str(exc), EXIT_FAILED) from exc
    print(json.dumps(result))
    agreed = (
        result["ticker_mismatches"] == 0 and result["checksum_mismatches"] == 0 and result["first_bad_update"] is None
    )
    return EXIT_OK if agreed else EXIT_FAILED

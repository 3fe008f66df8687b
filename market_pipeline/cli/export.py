"""`market-pipeline export hftbacktest`: instrument-days of the lake as hftbacktest data files.

One `<EXCHANGE>_<SYMBOL>_<day>.npz` per day (core/read/hftbacktest_export.py) and
`<EXCHANGE>_<SYMBOL>.json` with the tick and lot size hftbacktest's asset needs and the files in
day order. Only days that passed their blocking checks (the run history of DAGSTER_HOME, when set)
are written, unless --include-failed.
"""

from __future__ import annotations

import datetime as dt
import json
import warnings
from pathlib import Path

from market_pipeline.cli.common import EXIT_OK, EXIT_USAGE, CliError, eprint
from market_pipeline.core.lake.files import write_text_atomic
from market_pipeline.core.read.errors import SkippedDaysWarning
from market_pipeline.core.read.hftbacktest_export import export_day
from market_pipeline.core.read.ranges import TimeRange
from market_pipeline.settings import PipelineSettings


def export_hftbacktest_command(
    settings: PipelineSettings, instrument_key: str, start: dt.date, end: dt.date, out: Path, include_failed: bool
) -> int:
    import market_pipeline.lake

    spec = next((i for i in settings.universe if i.key == instrument_key), None)
    if spec is None:
        known = ", ".join(i.key for i in settings.universe)
        raise CliError(f"--instrument {instrument_key}: not in PIPELINE_INSTRUMENTS ({known})", EXIT_USAGE)
    _make_out_dir(out)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", SkippedDaysWarning)
        lake = market_pipeline.lake.open(settings.data_dir)
        span = TimeRange.of(start, end)
        days = lake.reader.day_files(
            "books", instrument_key, span, include_failed, include_failed_hint="--include-failed"
        )
    for warning in caught:
        eprint(f"warning: {warning.message}")
    files = []
    for day in days:
        exported = export_day(settings.lake_dir, day.instrument, day.day, out)
        print(f"{exported.path}  {exported.events:,} events ({exported.trades:,} trades)")
        files.append(exported.path.name)
    manifest = {
        "instrument": instrument_key,
        "tick_size": str(spec.tick_size),
        "lot_size": str(spec.lot_size),
        "files": files,
    }
    write_text_atomic(out / f"{spec.exchange}_{spec.symbol}.json", json.dumps(manifest, indent=2) + "\n")
    return EXIT_OK


def _make_out_dir(out: Path) -> None:
    """--out as a directory (made with its parents), or a usage error naming what is in the way."""
    if out.exists() and not out.is_dir():
        raise CliError(f"--out {out} exists and is not a directory: name a directory for the files", EXIT_USAGE)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # a parent that is a file, no permission
        raise CliError(f"--out {out}: cannot make the directory: {exc.strerror or exc}", EXIT_USAGE) from None

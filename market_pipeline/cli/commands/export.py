"""`market-pipeline export hftbacktest`."""

from __future__ import annotations

import argparse
from pathlib import Path

from market_pipeline.cli.commands.options import Parents


def register(sub: argparse._SubParsersAction, parents: Parents) -> None:
    export = sub.add_parser(
        "export",
        parents=[parents.verbose],
        help="write instrument-days of the lake in a backtester's format (hftbacktest)",
        description="Write each day from --start to --end (inclusive) that passed its blocking checks as "
        "hftbacktest's numpy event file: the previous day's book at the start, depth updates, vendor snapshot "
        "repairs and trades, with exchange (origin_time) and local (received_time) timestamps.",
    )
    export.add_argument("format", choices=["hftbacktest"], help="the file format")
    export.add_argument("--instrument", required=True, metavar="EXCHANGE:SYMBOL")
    export.add_argument("--start", required=True, metavar="YYYY-MM-DD", help="first day (UTC)")
    export.add_argument("--end", required=True, metavar="YYYY-MM-DD", help="last day (UTC), inclusive")
    export.add_argument("--out", required=True, type=Path, metavar="DIR", help="directory for the files")
    export.add_argument("--include-failed", action="store_true", help="also days that failed a blocking check")
    export.set_defaults(handler=_handle)


def _handle(args: argparse.Namespace) -> int:
    from market_pipeline.cli.common import parse_date
    from market_pipeline.cli.export import export_hftbacktest_command
    from market_pipeline.cli.master_key import master_key_context
    from market_pipeline.core import context
    from market_pipeline.settings import load_settings

    start, end = parse_date(args.start, "--start"), parse_date(args.end, "--end")
    with context.using(master_key_context(required=False)):  # for an encrypted lake
        return export_hftbacktest_command(load_settings(), args.instrument, start, end, args.out, args.include_failed)

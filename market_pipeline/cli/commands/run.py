"""`market-pipeline run`: a date range as one Dagster run."""

from __future__ import annotations

import argparse

from market_pipeline.cli.commands.options import Parents


def register(sub: argparse._SubParsersAction, parents: Parents) -> None:
    run = sub.add_parser(
        "run",
        parents=[parents.verbose, parents.progress],
        help="materialize a date range (inclusive) as one Dagster run",
        description="Materialize the selected assets for every day from --start-date to "
        "--end-date (inclusive) as ONE run in the Dagster instance of $DAGSTER_HOME.",
    )
    run.add_argument("--start-date", required=True, metavar="YYYY-MM-DD", help="first day (UTC)")
    run.add_argument("--end-date", required=True, metavar="YYYY-MM-DD", help="last day (UTC), inclusive")
    run.add_argument(
        "--select",
        action="extend",
        nargs="+",
        metavar="SEL",
        help="Dagster asset selection, e.g. raw_book_deltas, group:raw, raw_trades+ (repeatable; default: every asset)",
    )
    run.set_defaults(handler=_handle)


def _handle(args: argparse.Namespace) -> int:
    from market_pipeline.cli.run import run_command

    return run_command(args.start_date, args.end_date, args.select, args.verbose, args.progress)

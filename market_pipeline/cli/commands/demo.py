"""`market-pipeline demo`: the whole graph on a few days of synthetic data."""

from __future__ import annotations

import argparse
from pathlib import Path

from market_pipeline.cli.commands.options import Parents
from market_pipeline.cli.demo_defaults import DEMO_DAYS, DEMO_INSTRUMENTS


def register(sub: argparse._SubParsersAction, parents: Parents) -> None:
    demo = sub.add_parser(
        "demo",
        parents=[parents.verbose, parents.progress],
        help="generate synthetic data and materialize the whole pipeline for a few days",
        description="Materialize every asset for a few days of synthetic data for "
        f"{' and '.join(DEMO_INSTRUMENTS)}, then show what was produced.",
    )
    demo.add_argument("--days", type=int, default=DEMO_DAYS, metavar="N", help=f"number of days (default {DEMO_DAYS})")
    demo.add_argument("--start-date", metavar="YYYY-MM-DD", help="first day (default: the days end yesterday, UTC)")
    demo.add_argument(
        "--data-dir",
        type=Path,
        metavar="DIR",
        help="where the lake and warehouse go (default: PIPELINE_DATA_DIR, else ./data)",
    )
    demo.set_defaults(handler=_handle)


def _handle(args: argparse.Namespace) -> int:
    from market_pipeline.cli.demo import demo_command

    return demo_command(args.days, args.start_date, args.data_dir, args.verbose, args.progress)

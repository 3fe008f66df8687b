"""`market-pipeline cleanup`: the scratch failed or killed runs left behind."""

from __future__ import annotations

import argparse

from market_pipeline.cli.commands.options import Parents


def register(sub: argparse._SubParsersAction, parents: Parents) -> None:
    cleanup = sub.add_parser(
        "cleanup",
        parents=[parents.verbose],
        help="list and remove the scratch failed or killed runs left under PIPELINE_DATA_DIR",
        description="Remove runs/<run_id>/ directories (PIPELINE_SCRATCH_PER_RUN), the S3 vendor's downloads "
        "(sources/s3/) and leftover lake copies (tmp/lake-copies/). A successful run removes its own; a failed "
        "one keeps them for inspection. The directory of a run that is still going is never removed.",
    )
    cleanup.add_argument("--dry-run", action="store_true", help="only list what would be removed")
    cleanup.add_argument(
        "--older-than",
        type=float,
        default=0.0,
        metavar="HOURS",
        help="only scratch last written at least HOURS ago (default 0: all)",
    )
    cleanup.set_defaults(handler=_handle)


def _handle(args: argparse.Namespace) -> int:
    from market_pipeline.cli.cleanup import cleanup_command

    return cleanup_command(args.dry_run, args.older_than)

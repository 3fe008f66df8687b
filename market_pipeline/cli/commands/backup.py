"""`market-pipeline backup` and `restore`."""

from __future__ import annotations

import argparse
from pathlib import Path

from market_pipeline.cli.commands.options import Parents, positive_int


def register(sub: argparse._SubParsersAction, parents: Parents) -> None:
    backup = sub.add_parser(
        "backup",
        parents=[parents.verbose],
        help="write a consistent snapshot of the warehouse, the Dagster instance, checkpoints, captures and audit",
        description="Write DIR/market_pipeline-<UTC time>/ with a SHA-256 manifest: the warehouse's tables, the "
        "instance's SQLite databases, end-of-day book checkpoints, captures, the audit trail and the alerts. "
        "Waits, saying so, while a run holds the warehouse.",
    )
    backup.add_argument("--to", required=True, type=Path, metavar="DIR", help="directory that holds the snapshots")
    backup.add_argument("--keep", type=positive_int, metavar="N", help="then delete all but the newest N snapshots")
    backup.add_argument("--encrypt", action="store_true", help="encrypt every file with PIPELINE_MASTER_KEY")
    backup.add_argument(
        "--wait-timeout",
        type=float,
        default=3600.0,
        metavar="SECONDS",
        help="how long to wait for a run that holds the warehouse (default 3600; then exit 9)",
    )
    backup.set_defaults(handler=_backup)
    restore = sub.add_parser(
        "restore",
        parents=[parents.verbose],
        help="verify a backup and restore it into an empty PIPELINE_DATA_DIR (and DAGSTER_HOME)",
        description="Check every file of FROM against its manifest, then restore into $PIPELINE_DATA_DIR, which "
        "must be empty, and the instance's databases into $DAGSTER_HOME, which must hold only dagster.yaml.",
    )
    restore.add_argument("snapshot", type=Path, metavar="FROM", help="a DIR/market_pipeline-<time> snapshot")
    restore.add_argument(
        "--allow-nonempty-dagster-home",
        action="store_true",
        help="restore the instance beside other files in DAGSTER_HOME (an existing file is still never replaced)",
    )
    restore.set_defaults(handler=_restore)


def _backup(args: argparse.Namespace) -> int:
    from market_pipeline.cli.backup import backup_command
    from market_pipeline.cli.master_key import master_key_context
    from market_pipeline.core import context

    with context.using(master_key_context(required=args.encrypt)):
        return backup_command(args.to, args.keep, args.encrypt, args.wait_timeout)


def _restore(args: argparse.Namespace) -> int:
    from market_pipeline.cli.backup import restore_command
    from market_pipeline.cli.master_key import master_key_context
    from market_pipeline.core import context

    with context.using(master_key_context(required=False)):  # for an encrypted backup
        return restore_command(args.snapshot, args.allow_nonempty_dagster_home)

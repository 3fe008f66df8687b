"""`market-pipeline validate-env`."""

from __future__ import annotations

import argparse

from market_pipeline.cli.commands.options import Parents


def register(sub: argparse._SubParsersAction, parents: Parents) -> None:
    parser = sub.add_parser(
        "validate-env",
        parents=[parents.verbose],
        help="check the settings and directories; print a summary (secrets: set/not set only)",
        description="Load the settings (config.yaml, .env, PIPELINE_* variables) and check the "
        "directories they name. Exit 1 if anything is wrong.",
    )
    parser.set_defaults(handler=_handle)


def _handle(args: argparse.Namespace) -> int:
    from market_pipeline.cli.validate import validate_env

    return validate_env()

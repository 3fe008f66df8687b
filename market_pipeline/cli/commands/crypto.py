"""`market-pipeline encrypt` / `decrypt` and `rotate-key`."""

from __future__ import annotations

import argparse
from pathlib import Path

from market_pipeline.cli.commands.options import Parents


def register(sub: argparse._SubParsersAction, parents: Parents) -> None:
    for name, verb in (("encrypt", "encrypt"), ("decrypt", "decrypt")):
        crypt = sub.add_parser(
            name,
            parents=[parents.verbose],
            help=f"{verb} a file with AES-256-GCM (key derived from PIPELINE_MASTER_KEY)",
            description=f"{verb.capitalize()} FILE into OUT; OUT is written only when the whole file authenticates.",
        )
        crypt.add_argument("file", type=Path, metavar="FILE")
        crypt.add_argument("-o", "--output", required=True, type=Path, metavar="OUT")
        crypt.set_defaults(handler=_crypt)
    rotate = sub.add_parser(
        "rotate-key",
        parents=[parents.verbose],
        help="re-encrypt every encrypted file from PIPELINE_MASTER_KEY to PIPELINE_NEW_MASTER_KEY",
        description="Find every encrypted file under the directories (by its header), re-encrypt it with the "
        "key in PIPELINE_NEW_MASTER_KEY, verify it, and replace it atomically, one file at a time. Files already "
        "under the new key are skipped, so an interrupted rotation can be run again.",
    )
    rotate.add_argument(
        "dirs", nargs="*", type=Path, metavar="DIR", help="directories to rotate (default: PIPELINE_DATA_DIR)"
    )
    rotate.set_defaults(handler=_rotate)


def _crypt(args: argparse.Namespace) -> int:
    from market_pipeline.cli.crypto import crypt_command
    from market_pipeline.cli.master_key import master_key_context
    from market_pipeline.core import context

    with context.using(master_key_context(required=True)):
        return crypt_command(args.command, args.file, args.output)


def _rotate(args: argparse.Namespace) -> int:
    from market_pipeline.cli.master_key import master_key_context
    from market_pipeline.cli.rotate_key import rotate_key_command
    from market_pipeline.core import context

    with context.using(master_key_context(required=True)):  # the current key, from .env too
        return rotate_key_command(args.dirs)

"""`market-pipeline verify-capture FILE ...`."""

from __future__ import annotations

import argparse
from pathlib import Path

from market_pipeline.cli.commands.options import Parents


def register(sub: argparse._SubParsersAction, parents: Parents) -> None:
    verify = sub.add_parser(
        "verify-capture",
        parents=[parents.verbose],
        help="replay Binance or Kraken captures of one instrument exactly; print one JSON object",
        description="Replay the files (in time order) with their exchange's rules (from the file "
        "names: kraken_... Kraken's, others Binance's) and check every oracle: Binance's bookTickers "
        "whose update id matches an applied diff, Kraken's book checksums. Exit 0 only with no mismatch.",
    )
    verify.add_argument("files", nargs="+", type=Path, metavar="FILE")
    verify.set_defaults(handler=_handle)


def _handle(args: argparse.Namespace) -> int:
    from market_pipeline.cli.master_key import master_key_context
    from market_pipeline.cli.verify_capture import verify_capture_command
    from market_pipeline.core import context

    with context.using(master_key_context(required=False)):  # for .enc captures
        return verify_capture_command(args.files)

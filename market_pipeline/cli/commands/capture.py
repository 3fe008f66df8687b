"""`market-pipeline capture`: record a golden sample."""

from __future__ import annotations

import argparse
from pathlib import Path

from market_pipeline.cli.commands.options import Parents
from market_pipeline.vendors.registry import SUBSCRIBED_FEEDS


def register(sub: argparse._SubParsersAction, parents: Parents) -> None:
    capture = sub.add_parser(
        "capture",
        parents=[parents.verbose],
        help="record a golden sample from an exchange's WebSocket streams",
        description="Binance: subscribe to depth diffs, bookTicker and trades and take the REST snapshot "
        "by the sync rules; Kraken, OKX, Bybit: subscribe to the book (which starts with a snapshot), the "
        "exchange's top-of-book stream and trades. Write `<receive ns> <message>` lines, rotated hourly, "
        "with a SHA-256 manifest; a drop is a gap in the manifest, and the recorder reconnects.",
    )
    capture.add_argument("--exchange", default="binance", choices=("binance", *SUBSCRIBED_FEEDS))
    capture.add_argument(
        "--market",
        required=True,
        help="binance: spot|usdm|coinm; kraken: spot; okx: spot|swap|futures; bybit: spot|linear|inverse",
    )
    capture.add_argument(
        "--symbol",
        required=True,
        help="the exchange's symbol: btcusdt (binance), BTC/USD (kraken), BTC-USDT (okx), BTCUSDT (bybit)",
    )
    capture.add_argument(
        "--depth", type=int, help="book levels to subscribe to (kraken 10, okx 400, bybit 50 by default; not binance)"
    )
    capture.add_argument("--duration", required=True, help="how long to record, e.g. 90s, 15m, 1h")
    capture.add_argument("--out", required=True, type=Path, metavar="DIR")
    capture.add_argument("--ws-url", help=argparse.SUPPRESS)  # tests: a local WebSocket server
    capture.add_argument("--rest-url", help=argparse.SUPPRESS)  # tests: a local REST server
    capture.add_argument("--allow-plaintext", action="store_true", help=argparse.SUPPRESS)  # tests only: ws://
    capture.add_argument(
        "--encrypt",
        action="store_true",
        help="encrypt the files with PIPELINE_MASTER_KEY (also when PIPELINE_CAPTURE_ENCRYPT is on)",
    )
    capture.set_defaults(handler=_handle)


def _handle(args: argparse.Namespace) -> int:
    from market_pipeline.cli.capture import capture_command
    from market_pipeline.cli.master_key import master_key_context
    from market_pipeline.core import context
    from market_pipeline.settings import load_settings

    # --encrypt, or PIPELINE_CAPTURE_ENCRYPT (on in the prod profile).
    encrypt = args.encrypt or load_settings().capture_encrypt
    with context.using(master_key_context(required=encrypt)):
        return capture_command(args, encrypt)

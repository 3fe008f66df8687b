"""`market-pipeline capture`: record a golden sample from an exchange's WebSocket streams."""

from __future__ import annotations

import argparse
import asyncio
import functools
import re
import ssl
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from market_pipeline.cli.common import EXIT_FAILED, EXIT_OK, EXIT_USAGE, CliError

if TYPE_CHECKING:
    from market_pipeline.vendors.live_capture.recording import CaptureReport
    from market_pipeline.vendors.live_capture.stream import StreamTimeouts

_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smh])\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3_600}


@dataclass(frozen=True)
class RecordingPlan:
    """What every exchange's recording takes from the command: how long, TLS, the key, the timeouts."""

    seconds: float
    ssl_context: ssl.SSLContext
    master_key: bytes | None  # encrypt the files when given
    timeouts: StreamTimeouts


def parse_duration(text: str) -> float:
    """Seconds of a duration written like 90s, 15m, 1h or 1.5h."""
    match = _DURATION_RE.match(text)
    seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)] if match else 0.0
    if seconds <= 0:
        raise CliError(f"--duration {text!r} is not a positive duration like 90s, 15m or 1h", EXIT_USAGE)
    return seconds


def capture_command(args: argparse.Namespace, encrypt: bool) -> int:
    from market_pipeline.core.lake.paths import make_private_dirs
    from market_pipeline.core.security import crypto
    from market_pipeline.settings import load_settings
    from market_pipeline.vendors.live_capture.connection import tls_context
    from market_pipeline.vendors.live_capture.manifest import ManifestError
    from market_pipeline.vendors.live_capture.stream import StreamTimeouts

    live = load_settings().capture  # PIPELINE_CAPTURE__*: a bad one stops the command, named
    seconds = parse_duration(args.duration)
    timeouts = StreamTimeouts(
        read_idle=live.read_idle_timeout_seconds,
        ping_interval=live.ping_interval_seconds,
        ping_timeout=live.ping_timeout_seconds,
        open=live.open_timeout_seconds,
    )
    try:
        master_key = crypto.default_master_key() if encrypt else None
        recording = _binance if args.exchange == "binance" else _subscribed
        plan = RecordingPlan(seconds, tls_context(live.tls_min_version), master_key, timeouts)
        description, record = recording(args, plan)
    except ValueError as exc:  # MasterKeyError is one
        raise CliError(str(exc), EXIT_USAGE) from None
    print(
        f"capturing {description} for {args.duration} into {args.out}{' (encrypted)' if master_key else ''}", flush=True
    )
    try:
        make_private_dirs(args.out)
        report = asyncio.run(record())
    except (ManifestError, OSError) as exc:
        raise CliError(str(exc), EXIT_FAILED) from None
    for entry in report.files:
        print(f"  {entry['path']}  {entry['lines']:,} lines  {entry['bytes']:,} bytes  sha256 {entry['sha256']}")
    print(
        f"{report.messages:,} messages, {report.snapshots} snapshot(s), {report.connections} connection(s), "
        f"{len(report.gaps)} gap(s); manifest {report.manifest_path}"
    )
    if not report.files:
        raise CliError("nothing was recorded: no connection delivered a message", EXIT_FAILED)
    return EXIT_OK


def _binance(
    args: argparse.Namespace, plan: RecordingPlan
) -> tuple[str, Callable[[], Coroutine[Any, Any, CaptureReport]]]:
    """Binance's recording: the combined streams and the REST snapshot (ValueError naming a bad option)."""
    from market_pipeline.vendors.binance.live import endpoints
    from market_pipeline.vendors.binance.live.recorder import CaptureOptions, record
    from market_pipeline.vendors.live_capture.connection import check_scheme

    if args.market not in endpoints.DEFAULT_ENDPOINTS:
        raise ValueError(f"--market {args.market!r} is not a Binance market ({', '.join(endpoints.DEFAULT_ENDPOINTS)})")
    if args.depth is not None:
        raise ValueError("--depth is for kraken, okx and bybit: Binance's recorder takes 1000-level REST snapshots")
    defaults = endpoints.DEFAULT_ENDPOINTS[args.market]
    ws_base = args.ws_url or defaults.stream_base
    rest_base = args.rest_url or defaults.depth_url
    endpoints.check_symbol(args.symbol)
    check_scheme(ws_base, "--ws-url", "wss", "ws", args.allow_plaintext)
    check_scheme(rest_base, "--rest-url", "https", "http", args.allow_plaintext)
    options = CaptureOptions(
        market=args.market,
        symbol=args.symbol,
        duration_seconds=plan.seconds,
        out_dir=args.out,
        stream_url=endpoints.stream_url(ws_base, args.symbol),
        snapshot_url=endpoints.snapshot_url(rest_base, args.symbol),
        ssl_context=plan.ssl_context,
        master_key=plan.master_key,
        timeouts=plan.timeouts,
    )
    return f"{args.market} {args.symbol.upper()}", functools.partial(record, options)


def _subscribed(
    args: argparse.Namespace, plan: RecordingPlan
) -> tuple[str, Callable[[], Coroutine[Any, Any, CaptureReport]]]:
    """The recording of an exchange that sends a snapshot on subscribing (ValueError naming a bad option)."""
    from market_pipeline.vendors.live_capture.connection import check_scheme
    from market_pipeline.vendors.live_capture.subscribed import SubscribedCaptureOptions, record_subscribed
    from market_pipeline.vendors.registry import SUBSCRIBED_FEEDS

    if args.rest_url is not None:
        raise ValueError(f"--rest-url is for binance: {args.exchange} sends its snapshot on the stream")
    feed = SUBSCRIBED_FEEDS[args.exchange](args.market, args.symbol, args.depth, args.ws_url)
    check_scheme(feed.url, "--ws-url", "wss", "ws", args.allow_plaintext)
    options = SubscribedCaptureOptions(feed, plan.seconds, args.out, plan.ssl_context, plan.master_key, plan.timeouts)
    return f"{args.exchange} {args.market} {args.symbol}", functools.partial(record_subscribed, options)

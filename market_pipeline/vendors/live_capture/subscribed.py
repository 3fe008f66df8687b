"""The recorder of exchanges whose book channel starts with a snapshot on subscribing (Kraken,
OKX, Bybit): connect, send the feed's subscribe messages, write every message as received; on a
drop or a silent feed, record the gap and reconnect, and subscribing again brings a new snapshot
(which is how those exchanges say a client resyncs: no REST snapshot to join, unlike Binance).

An exchange that closes a quiet connection unless the client pings at the application level
(OKX's text `ping`, Bybit's `{"op":"ping"}`) gets its ping every `ping_seconds`; a reply that is
exactly the feed's `pong` text is not market data and is not written. Every other message is
written as it arrived, on one line: JSON allows whitespace between tokens only, so a line break
in a message becomes a space and the numbers keep the text the exchange sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from dataclasses import dataclass
from pathlib import Path

from websockets.asyncio.client import ClientConnection

from market_pipeline.core.security.scrub import redact_url
from market_pipeline.core.telemetry.telemetry import count
from market_pipeline.vendors.live_capture.manifest import Manifest
from market_pipeline.vendors.live_capture.recording import CaptureRecorder, CaptureReport, record_run
from market_pipeline.vendors.live_capture.session import Connection, SessionEnd, receive_until
from market_pipeline.vendors.live_capture.stream import CONNECTION_ERRORS, StreamTimeouts
from market_pipeline.vendors.live_capture.writer import HourlyCaptureWriter

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SubscribedFeed:
    """One instrument's streams on one exchange: where to connect and what to send."""

    exchange: str  # the capture files' first name part
    market: str
    symbol: str  # as the capture files' names spell it
    url: str
    subscribe: tuple[str, ...]  # the messages sent on each connection, in order
    ping: str | None = None  # the application ping the exchange needs, if any
    pong: str | None = None  # its reply, exactly, when that is not JSON market data
    ping_seconds: float = 20.0


@dataclass(frozen=True)
class SubscribedCaptureOptions:
    feed: SubscribedFeed
    duration_seconds: float
    out_dir: Path
    ssl_context: ssl.SSLContext | None  # None for a ws:// test feed
    master_key: bytes | None = None  # encrypt the files when given
    timeouts: StreamTimeouts = StreamTimeouts()


def one_line(text: str) -> str:
    """A JSON message on one line, every token as sent (a line break between tokens is whitespace)."""
    return text.replace("\r", " ").replace("\n", " ") if "\n" in text or "\r" in text else text


class _SubscribedRecorder(CaptureRecorder):
    def __init__(self, options: SubscribedCaptureOptions, manifest: Manifest) -> None:
        feed = options.feed
        writer = HourlyCaptureWriter(
            options.out_dir, feed.market, feed.symbol, manifest, options.master_key, feed.exchange
        )
        connection = Connection(feed.url, options.ssl_context, options.timeouts, options.duration_seconds)
        super().__init__(writer, manifest, feed.market, connection)
        self.options = options

    def _on_message(self, receive_ns: int, text: str) -> None:
        if text == self.options.feed.pong:
            return
        self.write(receive_ns, one_line(text))
        self.report.messages += 1

    async def _ping(self, ws: ClientConnection) -> None:
        feed = self.options.feed
        while True:
            await asyncio.sleep(feed.ping_seconds)
            await ws.send(feed.ping)

    async def session(self, ws: ClientConnection, deadline: float) -> SessionEnd:
        """Subscribe, then record the connection until the deadline or until it drops."""
        self.report.connections += 1
        received = self.report.messages
        pinging = asyncio.get_running_loop().create_task(self._ping(ws)) if self.options.feed.ping else None
        try:
            for message in self.options.feed.subscribe:
                await ws.send(message)
            reason = await receive_until(ws, deadline, self.options.timeouts.read_idle, self._on_message)
        except CONNECTION_ERRORS as exc:  # dropped while subscribing
            reason = f"subscribing failed: {exc}"
        finally:
            if pinging is not None:
                pinging.cancel()
                with contextlib.suppress(asyncio.CancelledError, *CONNECTION_ERRORS):
                    await pinging
            await ws.close()
        return SessionEnd(reason, self.report.messages > received)

    def on_drop(self, reason: str) -> None:
        self.open_gap("disconnect", reason, self.last_receive_ns, None)
        count("mdp_capture_reconnects_total", 1, market=self.options.feed.market)

    def write(self, receive_ns: int, line: str) -> bool:
        resumed = self.gap is not None
        opened = super().write(receive_ns, line)
        if resumed:  # the first message after a reconnect: the new subscription's answers and snapshot follow
            self.close_gap()
        return opened


async def record_subscribed(options: SubscribedCaptureOptions) -> CaptureReport:
    """Record `options.feed` for `options.duration_seconds`; the files and manifest are complete on
    return, also when cancelled (Ctrl-C)."""
    feed = options.feed
    return await record_run(
        _SubscribedRecorder(options, Manifest(options.out_dir)),
        exchange=feed.exchange,
        market=feed.market,
        symbol=feed.symbol.upper(),
        stream_url=redact_url(feed.url),
        subscribe=list(feed.subscribe),
        encrypted=options.master_key is not None,
    )

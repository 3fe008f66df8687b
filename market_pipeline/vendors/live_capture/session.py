"""One recorder's connections: reconnect with backoff until the deadline, and read a connection
until it drops, goes silent for the read-idle timeout or the deadline ends it. Every exchange's
recorder runs its connections through these two; what it does with each message is its own."""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from websockets.asyncio.client import ClientConnection

from market_pipeline.core.security.scrub import redact_url
from market_pipeline.vendors.live_capture.connection import backoff_delay, describe
from market_pipeline.vendors.live_capture.stream import CONNECTION_ERRORS, StreamTimeouts, open_stream

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Connection:
    """Where a recorder connects, with which TLS context and timeouts, and for how long."""

    url: str
    ssl_context: ssl.SSLContext | None
    timeouts: StreamTimeouts
    duration_seconds: float


@dataclass(frozen=True)
class SessionEnd:
    """How a connection ended: `reason` None when the deadline ended it, else why it dropped; and
    whether it delivered any message (a connection that did resets the backoff)."""

    reason: str | None
    delivered: bool


async def receive_until(
    ws: ClientConnection, deadline: float, read_idle: float, on_message: Callable[[int, str], None]
) -> str | None:
    """Hand each message of `ws` to `on_message(receive ns, text)` until the loop time `deadline`
    (None) or until the connection drops or stays silent for `read_idle` seconds (why, as text)."""
    loop = asyncio.get_running_loop()
    try:
        while True:
            try:
                async with asyncio.timeout_at(min(deadline, loop.time() + read_idle)):
                    text = await ws.recv(decode=True)  # binary frames are decoded as UTF-8 too
            except TimeoutError:
                if loop.time() >= deadline:
                    return None
                return f"read-idle timeout: no message for {read_idle:g} s"
            on_message(time.time_ns(), text)
    except CONNECTION_ERRORS as exc:  # ConnectionClosed, protocol errors, ssl.SSLError, resets
        return describe(exc)
    except UnicodeDecodeError as exc:  # a binary frame that is not UTF-8 (text frames are checked by websockets)
        return f"binary message is not UTF-8: {exc}"


async def reconnecting(
    connection: Connection,
    session: Callable[[ClientConnection, float], Awaitable[SessionEnd]],
    on_drop: Callable[[str], None],
) -> None:
    """Connect and run `session(ws, deadline)` on each connection until the connection's duration
    has passed; after a drop (`on_drop(reason)`) or a failed connect, wait with exponential backoff."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + connection.duration_seconds
    attempt = 0
    shown = redact_url(connection.url)
    while (remaining := deadline - loop.time()) > 0:
        try:
            async with asyncio.timeout(remaining):
                ws = await open_stream(connection.url, connection.ssl_context, connection.timeouts)
        except CONNECTION_ERRORS as exc:  # refused, TLS failure, handshake refused, timeout
            log.warning("capture: cannot connect to %s: %s", shown, describe(exc))
        else:
            end = await session(ws, deadline)
            if end.reason is None:
                break
            if end.delivered:
                attempt = 0
            on_drop(end.reason)
        delay = min(backoff_delay(attempt), max(deadline - loop.time(), 0))
        attempt += 1
        await asyncio.sleep(delay)

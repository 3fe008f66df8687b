"""The combined-stream connection: the `websockets` asyncio client with keepalive pings and limits.

The library does the protocol (handshake, masking, fragments, ping/pong, closing). The recorder
adds the read-idle timeout around `recv()`: keepalive only proves the peer is alive, not that the
feed still sends.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from urllib.parse import urlsplit

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import WebSocketException

MAX_MESSAGE_BYTES = 16 << 20  # a server cannot make the recorder buffer more than this
USER_AGENT = "market-pipeline-capture"
# Closing waits this long at most for the server's close frame (no longer than a pong may take):
# a hung server must not hold up the reconnect.
CLOSE_TIMEOUT_SECONDS = 2.0

# What a failed connect or a dropped connection raises: refused, reset, TLS failure (ssl.SSLError
# is an OSError), handshake refused or broken protocol, and the open timeout.
CONNECTION_ERRORS = (OSError, WebSocketException, TimeoutError)


@dataclass(frozen=True)
class StreamTimeouts:
    """`PIPELINE_CAPTURE__*` (vendors/binance/config.py::LiveCaptureSettings) in seconds."""

    read_idle: float = 10.0
    ping_interval: float = 20.0
    ping_timeout: float = 20.0
    open: float = 10.0


async def open_stream(url: str, ssl_context: ssl.SSLContext, timeouts: StreamTimeouts) -> ClientConnection:
    """Connect to `url` (ws:// or wss://; `ssl_context` applies to wss://). Raises one of
    CONNECTION_ERRORS when it cannot."""
    secure = urlsplit(url).scheme == "wss"
    return await connect(
        url,
        ssl=ssl_context if secure else None,  # websockets refuses an SSL context for ws://
        open_timeout=timeouts.open,
        ping_interval=timeouts.ping_interval,
        ping_timeout=timeouts.ping_timeout,
        close_timeout=min(CLOSE_TIMEOUT_SECONDS, timeouts.ping_timeout),
        max_size=MAX_MESSAGE_BYTES,
        # Binance sends small JSON messages at a high rate: deflate would cost CPU for little.
        compression=None,
        user_agent_header=USER_AGENT,
    )

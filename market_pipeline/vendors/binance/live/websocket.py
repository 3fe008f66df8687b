"""A minimal RFC 6455 WebSocket client over asyncio streams, enough for Binance's market streams.

Supports: the opening handshake (with the Sec-WebSocket-Accept check), masked client frames,
text and binary messages split over continuation frames, ping (answered with pong), pong and the
closing handshake. No extensions (permessage-deflate is not offered) and no subprotocols.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import ssl
import struct
from urllib.parse import urlsplit

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
MAX_MESSAGE_BYTES = 16 << 20  # a server cannot make the client buffer more than this
CLOSE_NORMAL = 1000


class WebSocketError(ConnectionError):
    """The handshake failed or the server broke the protocol."""


class ConnectionClosed(ConnectionError):
    """The connection ended: a close frame from the server, or the stream simply stopped."""

    def __init__(self, reason: str, code: int | None = None) -> None:
        self.code = code
        super().__init__(reason if code is None else f"{reason} (close code {code})")


def _mask(payload: bytes, key: bytes) -> bytes:
    # XOR with the key repeated, done on one big integer instead of byte by byte.
    n = len(payload)
    if not n:
        return payload
    repeated = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")).to_bytes(n, "big")


def encode_frame(opcode: int, payload: bytes, fin: bool = True) -> bytes:
    """One client frame: always masked with a fresh random key (RFC 6455 section 5.3)."""
    head = bytearray([(0x80 if fin else 0) | opcode])
    n = len(payload)
    if n < 126:
        head.append(0x80 | n)
    elif n < 1 << 16:
        head.append(0x80 | 126)
        head += struct.pack(">H", n)
    else:
        head.append(0x80 | 127)
        head += struct.pack(">Q", n)
    key = os.urandom(4)
    return bytes(head) + key + _mask(payload, key)


class WebSocket:
    """An open client connection. Use `connect()` to make one."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._close_sent = False

    async def _frame(self) -> tuple[bool, int, bytes]:
        try:
            b0, b1 = await self._reader.readexactly(2)
            if b0 & 0x70:
                raise WebSocketError("frame with reserved bits set (no extension was negotiated)")
            if b1 & 0x80:
                raise WebSocketError("masked frame from the server")
            n = b1 & 0x7F
            if n == 126:
                (n,) = struct.unpack(">H", await self._reader.readexactly(2))
            elif n == 127:
                (n,) = struct.unpack(">Q", await self._reader.readexactly(8))
            if n > MAX_MESSAGE_BYTES:
                raise WebSocketError(f"frame of {n} bytes exceeds {MAX_MESSAGE_BYTES}")
            payload = await self._reader.readexactly(n)
        except asyncio.IncompleteReadError:
            raise ConnectionClosed("connection lost (no close frame)") from None
        return bool(b0 & 0x80), b0 & 0x0F, payload

    async def recv(self) -> str:
        """The next text message (binary ones are decoded as UTF-8 too). Answers pings on the way.

        Raises ConnectionClosed when the connection ends, WebSocketError on a protocol violation.
        """
        parts: list[bytes] = []
        size = 0
        message_op: int | None = None
        while True:
            fin, op, payload = await self._frame()
            if op >= OP_CLOSE:  # control frames: never fragmented, may come between fragments
                if not fin or len(payload) > 125:
                    raise WebSocketError("fragmented or oversized control frame")
                if op == OP_PING:
                    await self._send(OP_PONG, payload)
                elif op == OP_CLOSE:
                    code = struct.unpack(">H", payload[:2])[0] if len(payload) >= 2 else None
                    await self.close(code or CLOSE_NORMAL)
                    raise ConnectionClosed(
                        f"server closed the connection: {payload[2:].decode('utf-8', 'replace')}", code
                    )
                elif op != OP_PONG:
                    raise WebSocketError(f"unknown control opcode {op:#x}")
                continue
            if op in (OP_TEXT, OP_BINARY):
                if message_op is not None:
                    raise WebSocketError("new message before the previous one was finished")
                message_op = op
            elif op != OP_CONT or message_op is None:
                raise WebSocketError(f"unexpected opcode {op:#x}")
            size += len(payload)
            if size > MAX_MESSAGE_BYTES:
                raise WebSocketError(f"message exceeds {MAX_MESSAGE_BYTES} bytes")
            parts.append(payload)
            if fin:
                try:
                    return b"".join(parts).decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise WebSocketError(f"message is not UTF-8: {exc}") from None

    async def _send(self, opcode: int, payload: bytes) -> None:
        self._writer.write(encode_frame(opcode, payload))
        await self._writer.drain()

    async def send_text(self, text: str) -> None:
        await self._send(OP_TEXT, text.encode("utf-8"))

    async def close(self, code: int = CLOSE_NORMAL) -> None:
        """Send a close frame (once) and drop the transport; never raises."""
        try:
            if not self._close_sent:
                self._close_sent = True
                await self._send(OP_CLOSE, struct.pack(">H", code))
        except (ConnectionError, OSError):
            pass
        finally:
            self._writer.close()
            try:
                await asyncio.wait_for(self._writer.wait_closed(), 1.0)
            except (TimeoutError, ConnectionError, OSError, ssl.SSLError):
                pass


async def connect(url: str, ssl_context: ssl.SSLContext | None, timeout: float = 10.0) -> WebSocket:
    """Open `url` (ws:// or wss://); wss uses `ssl_context`, which must then be given.

    Raises WebSocketError when the server refuses the upgrade, OSError when it cannot be reached.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss"):
        raise WebSocketError(f"not a WebSocket URL: {parts.scheme}://{parts.hostname}")
    secure = parts.scheme == "wss"
    if secure and ssl_context is None:
        raise WebSocketError("wss:// needs an SSL context")
    host = parts.hostname or ""
    port = parts.port or (443 if secure else 80)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection(
            host, port, ssl=ssl_context if secure else None, server_hostname=host if secure else None
        ),
        timeout,
    )
    try:
        key = base64.b64encode(os.urandom(16)).decode()
        host_header = host if parts.port is None else f"{host}:{port}"
        writer.write(
            (
                f"GET {target} HTTP/1.1\r\nHost: {host_header}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                "User-Agent: market-pipeline-capture\r\n\r\n"
            ).encode("ascii")
        )
        await writer.drain()
        try:  # the reader's default 64 KiB limit bounds the response headers
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
            raise WebSocketError(f"no complete handshake response from {host}:{port}") from exc
        status, *header_lines = head.decode("latin-1").split("\r\n")
        fields = status.split(" ", 2)
        if len(fields) < 2 or fields[1] != "101":
            raise WebSocketError(f"{host}:{port} refused the WebSocket upgrade: {status.strip()!r}")
        headers = {}
        for line in header_lines:
            name, sep, value = line.partition(":")
            if sep:
                headers[name.strip().lower()] = value.strip()
        expected = base64.b64encode(hashlib.sha1(key.encode() + _GUID).digest()).decode()
        if headers.get("upgrade", "").lower() != "websocket" or headers.get("sec-websocket-accept") != expected:
            raise WebSocketError(f"{host}:{port} sent an invalid WebSocket handshake response")
        if headers.get("sec-websocket-extensions"):
            raise WebSocketError("server enabled an extension the client did not offer")
    except BaseException:
        writer.close()
        raise
    return WebSocket(reader, writer)

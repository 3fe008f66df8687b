"""Local WebSocket servers for the recorders' tests (`LoopbackWebSocketServer`), and a feed for the
subscribed recorder's (`SubscribedFeedServer`): each connection waits for the client's
subscribe messages, answers a text `ping` with `pong`, sends its list of messages, and then either
drops without a close frame (`abort`) or stays open until the client leaves."""

from __future__ import annotations

import asyncio
import ssl
import threading

from websockets import exceptions as websockets_exceptions
from websockets.asyncio import server as websockets_server


class LoopbackWebSocketServer:
    """A WebSocket server on 127.0.0.1 and a free port, run by an event loop on a thread of its own;
    a subclass answers each connection (`_handler`)."""

    def __init__(self, ssl_context: ssl.SSLContext | None = None) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

        async def start():  # serve() needs the running loop of the server thread
            return await websockets_server.serve(self._handler, "127.0.0.1", 0, ssl=ssl_context)

        self.ws_server = asyncio.run_coroutine_threadsafe(start(), self.loop).result(10)
        self.port = self.ws_server.sockets[0].getsockname()[1]

    async def _handler(self, ws) -> None:
        raise NotImplementedError

    def close(self) -> None:
        async def stop() -> None:
            self.ws_server.close()
            await self.ws_server.wait_closed()

        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


class SubscribedFeedServer(LoopbackWebSocketServer):
    """`connections[i]` lists what connection i sends, and whether it aborts after sending it."""

    def __init__(self, connections: list[tuple[list[str], bool]], subscriptions: int) -> None:
        self.connections = connections
        self.subscriptions = subscriptions
        self.received: list[list[str]] = []  # what each connection got from the client
        super().__init__()
        self.url = f"ws://127.0.0.1:{self.port}/v2"

    async def _handler(self, ws) -> None:
        index = len(self.received)
        got: list[str] = []
        self.received.append(got)
        messages, abort = self.connections[min(index, len(self.connections) - 1)]
        try:
            while len(got) < self.subscriptions:
                got.append(await ws.recv())
            for message in messages:
                await ws.send(message)
            if abort:
                ws.transport.abort()  # no close frame: the connection just dies
                return
            async for text in ws:  # until the client leaves
                got.append(text)
                if text == "ping":
                    await ws.send("pong")
        except websockets_exceptions.ConnectionClosed:
            pass

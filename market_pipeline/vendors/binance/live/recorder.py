"""The capture loop: connect, buffer diffs, take the REST snapshot, write; reconnect on a drop.

Per connection, following Binance's "manage a local order book" steps: open the combined stream,
write every message with its wall-clock receive time (``time.time_ns()``; the file itself is the
buffer of diffs), and once the first depth diff arrived take the REST snapshot and write it too.
A snapshot older than the first buffered diff cannot be joined by a replay and is taken again.
When the diff chain breaks (a missed message), the connection drops or it goes silent for the
read-idle timeout, the gap goes into the manifest and, after reconnecting with exponential
backoff, a new snapshot lets the replay resync.
Each new hourly file also gets a fresh snapshot, so every file replays on its own.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import ssl
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from websockets.asyncio.client import ClientConnection

from market_pipeline.core.security.scrub import redact_url
from market_pipeline.core.telemetry.telemetry import count
from market_pipeline.vendors.binance.live.manifest import Manifest
from market_pipeline.vendors.binance.live.snapshot import SnapshotError, fetch_snapshot
from market_pipeline.vendors.binance.live.stream import CONNECTION_ERRORS, StreamTimeouts, open_stream
from market_pipeline.vendors.binance.live.sync import DiffChain
from market_pipeline.vendors.binance.live.writer import HourlyCaptureWriter

log = logging.getLogger(__name__)

BACKOFF_FIRST_SECONDS = 0.5
BACKOFF_MAX_SECONDS = 30.0


def backoff_delay(attempt: int) -> float:
    """Exponential backoff with jitter: up to 0.5 s, 1 s, 2 s, ... 30 s (half of it at least)."""
    return min(BACKOFF_MAX_SECONDS, BACKOFF_FIRST_SECONDS * 2**attempt) * random.uniform(0.5, 1.0)


def _describe(exc: BaseException) -> str:
    """The error's message, with its cause when it only wraps one (websockets wraps TLS failures)."""
    text = str(exc) or type(exc).__name__
    cause = exc.__cause__
    return f"{text}: {cause}" if cause is not None and str(cause) and str(cause) not in text else text


@dataclass(frozen=True)
class CaptureOptions:
    market: str  # spot | usdm | coinm
    symbol: str
    duration_seconds: float
    out_dir: Path
    stream_url: str
    snapshot_url: str
    ssl_context: ssl.SSLContext
    master_key: bytes | None = None  # encrypt the files when given
    timeouts: StreamTimeouts = StreamTimeouts()


@dataclass
class CaptureReport:
    manifest_path: Path
    files: list[dict[str, Any]] = field(default_factory=list)
    gaps: list[dict[str, Any]] = field(default_factory=list)
    connections: int = 0
    snapshots: int = 0
    messages: int = 0


class _Recorder:
    def __init__(self, options: CaptureOptions, manifest: Manifest) -> None:
        self.options = options
        self.manifest = manifest
        self.writer = HourlyCaptureWriter(options.out_dir, options.market, options.symbol, manifest, options.master_key)
        self.report = CaptureReport(manifest.path)
        self.chain = DiffChain(futures=options.market != "spot")
        self.last_receive_ns: int | None = None
        self.gap: dict[str, Any] | None = None  # open until a snapshot resynchronises
        self.snapshot_task: asyncio.Task[None] | None = None

    # --- gaps ---------------------------------------------------------------------------------

    def _open_gap(self, kind: str, reason: str, from_ns: int | None, last_update_id: int | None) -> None:
        self._close_gap()
        self.gap = {
            "kind": kind,
            "reason": reason,
            "from_ns": from_ns,  # receive time of the last message before the gap
            "to_ns": None,  # ... and of the first one after it
            "last_update_id": last_update_id,
            "resumed_update_id": None,
            "snapshot_update_id": None,
        }
        log.warning("capture gap (%s): %s", kind, reason)

    def _close_gap(self) -> None:
        if self.gap is not None:
            self.manifest.add_gap(self.gap)
            self.report.gaps.append(self.gap)
            self.gap = None

    # --- messages -----------------------------------------------------------------------------

    def _write(self, receive_ns: int, line: str) -> bool:
        opened = self.writer.write(receive_ns, line)
        self.last_receive_ns = receive_ns
        if self.gap is not None and self.gap["to_ns"] is None:
            self.gap["to_ns"] = receive_ns
        return opened

    def _on_message(self, receive_ns: int, text: str) -> None:
        try:
            message = json.loads(text)
        except ValueError:
            log.warning("capture: skipping a message that is not JSON: %.200r", text)
            return
        data = message.get("data") if isinstance(message, dict) else None
        stream = message.get("stream") if isinstance(message, dict) else None
        if not isinstance(stream, str) or not isinstance(data, dict):
            # Subscription answers and errors are not market data; the capture format has no place for them.
            log.warning("capture: skipping a message that is not a combined-stream message: %.200r", text)
            return
        if "\n" in text or "\r" in text:  # one message, one line
            text = json.dumps(message, separators=(",", ":"))
        previous_ns = self.last_receive_ns
        new_file = self._write(receive_ns, text)
        self.report.messages += 1
        if "@depth" in stream:
            try:
                first, last = int(data["U"]), int(data["u"])
                previous = None if data.get("pu") is None else int(data["pu"])
            except (KeyError, TypeError, ValueError):
                log.warning("capture: depth diff without integer U/u/pu: %.200r", text)
                return
            held_before = self.chain.last_update_id
            if not self.chain.add(first, last, previous):
                reason = f"diff U={first} pu={previous} does not follow u={held_before}"
                self._open_gap("sequence", reason, previous_ns, held_before)
                self.gap["to_ns"] = receive_ns
            if self.gap is not None and self.gap["resumed_update_id"] is None:
                self.gap["resumed_update_id"] = first
            if held_before is None or self.gap is not None:
                self._want_snapshot()
        if new_file and self.chain.last_update_id is not None:
            self._want_snapshot()

    # --- snapshots ----------------------------------------------------------------------------

    def _want_snapshot(self) -> None:
        if self.snapshot_task is None or self.snapshot_task.done():
            self.snapshot_task = asyncio.get_running_loop().create_task(self._take_snapshot())

    async def _take_snapshot(self) -> None:
        attempt = 0
        while True:
            try:
                snapshot = await asyncio.to_thread(fetch_snapshot, self.options.snapshot_url, self.options.ssl_context)
            except SnapshotError as exc:
                log.warning("capture: %s; retrying", exc)
            else:
                if self.chain.bridges(snapshot.last_update_id):
                    break
                log.info(
                    "capture: snapshot lastUpdateId=%d is older than the first buffered diff U=%s; taking another",
                    snapshot.last_update_id,
                    self.chain.first_update_id,
                )
            await asyncio.sleep(backoff_delay(attempt))
            attempt += 1
        receive_ns = time.time_ns()  # stamped on the event loop, like the stream messages
        self._write(receive_ns, snapshot.line)
        self.report.snapshots += 1
        if self.gap is not None:
            self.gap["snapshot_update_id"] = snapshot.last_update_id
            self._close_gap()

    async def _stop_snapshot(self) -> None:
        task, self.snapshot_task = self.snapshot_task, None
        if task is not None and not task.done():
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass

    # --- connections --------------------------------------------------------------------------

    async def _session(self, ws: ClientConnection, deadline: float) -> str | None:
        """Record one connection; None when the deadline ended it, else why it dropped."""
        self.chain = DiffChain(futures=self.options.market != "spot")
        loop = asyncio.get_running_loop()
        idle = self.options.timeouts.read_idle
        try:
            while True:
                try:
                    async with asyncio.timeout_at(min(deadline, loop.time() + idle)):
                        text = await ws.recv(decode=True)  # binary frames are decoded as UTF-8 too
                except TimeoutError:
                    if loop.time() >= deadline:
                        return None
                    return f"read-idle timeout: no message for {idle:g} s"
                self._on_message(time.time_ns(), text)
        except CONNECTION_ERRORS as exc:  # ConnectionClosed, protocol errors, ssl.SSLError, resets
            return _describe(exc)
        except UnicodeDecodeError as exc:  # a binary frame that is not UTF-8 (text frames are checked by websockets)
            return f"binary message is not UTF-8: {exc}"
        finally:
            await self._stop_snapshot()
            await ws.close()

    async def run(self) -> CaptureReport:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.options.duration_seconds
        attempt = 0
        url = redact_url(self.options.stream_url)
        while (remaining := deadline - loop.time()) > 0:
            try:
                async with asyncio.timeout(remaining):
                    ws = await open_stream(self.options.stream_url, self.options.ssl_context, self.options.timeouts)
            except CONNECTION_ERRORS as exc:  # refused, TLS failure, handshake refused, timeout
                log.warning("capture: cannot connect to %s: %s", url, _describe(exc))
            else:
                self.report.connections += 1
                received = self.report.messages
                reason = await self._session(ws, deadline)
                if reason is None:
                    break
                if self.report.messages > received:
                    attempt = 0
                self._open_gap("disconnect", reason, self.last_receive_ns, self.chain.last_update_id)
                count("mdp_capture_reconnects_total", 1, market=self.options.market)
            delay = min(backoff_delay(attempt), max(deadline - loop.time(), 0))
            attempt += 1
            await asyncio.sleep(delay)
        return self.report

    def finish(self) -> None:
        self._close_gap()  # a gap still open at the end has no resync snapshot
        self.writer.close()
        self.report.files = self.writer.files


async def record(options: CaptureOptions) -> CaptureReport:
    """Record for `options.duration_seconds`; the files and manifest are complete on return,
    also when cancelled (Ctrl-C): the open file is finished and recorded before leaving."""
    manifest = Manifest(options.out_dir)
    run = manifest.start_run(
        market=options.market,
        symbol=options.symbol.upper(),
        stream_url=redact_url(options.stream_url),
        snapshot_url=redact_url(options.snapshot_url),
        encrypted=options.master_key is not None,
        started_ns=time.time_ns(),
        ended_ns=None,
    )
    recorder = _Recorder(options, manifest)
    try:
        return await recorder.run()
    finally:
        recorder.finish()
        report = recorder.report
        run.update(
            ended_ns=time.time_ns(),
            connections=report.connections,
            snapshots=report.snapshots,
            messages=report.messages,
            lines=recorder.writer.lines,
            files=len(report.files),
            gaps=len(report.gaps),
        )
        manifest.save()
        count("mdp_capture_messages_total", report.messages, market=options.market)
        count("mdp_capture_gaps_total", len(report.gaps), market=options.market)

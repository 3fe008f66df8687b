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
import ssl
import time
from dataclasses import dataclass
from pathlib import Path

from websockets.asyncio.client import ClientConnection

from market_pipeline.core.security.scrub import redact_url
from market_pipeline.core.telemetry.telemetry import count
from market_pipeline.vendors.binance.live.snapshot import SnapshotError, fetch_snapshot
from market_pipeline.vendors.binance.live.sync import DiffChain
from market_pipeline.vendors.live_capture.connection import backoff_delay
from market_pipeline.vendors.live_capture.manifest import Manifest
from market_pipeline.vendors.live_capture.recording import CaptureRecorder, CaptureReport, record_run
from market_pipeline.vendors.live_capture.session import Connection, SessionEnd, receive_until
from market_pipeline.vendors.live_capture.stream import StreamTimeouts
from market_pipeline.vendors.live_capture.writer import HourlyCaptureWriter

log = logging.getLogger(__name__)


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


class _Recorder(CaptureRecorder):
    def __init__(self, options: CaptureOptions, manifest: Manifest) -> None:
        writer = HourlyCaptureWriter(options.out_dir, options.market, options.symbol, manifest, options.master_key)
        connection = Connection(options.stream_url, options.ssl_context, options.timeouts, options.duration_seconds)
        super().__init__(writer, manifest, options.market, connection)
        self.options = options
        self.chain = DiffChain(futures=options.market != "spot")
        self.snapshot_task: asyncio.Task[None] | None = None

    # --- messages -----------------------------------------------------------------------------

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
        new_file = self.write(receive_ns, text)
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
                self.open_gap("sequence", reason, previous_ns, held_before)
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
        self.write(receive_ns, snapshot.line)
        self.report.snapshots += 1
        if self.gap is not None:
            self.gap["snapshot_update_id"] = snapshot.last_update_id
            self.close_gap()

    async def _stop_snapshot(self) -> None:
        task, self.snapshot_task = self.snapshot_task, None
        if task is not None and not task.done():
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass

    # --- connections --------------------------------------------------------------------------

    async def session(self, ws: ClientConnection, deadline: float) -> SessionEnd:
        """Record one connection, until the deadline or until it drops."""
        self.report.connections += 1
        received = self.report.messages
        self.chain = DiffChain(futures=self.options.market != "spot")
        try:
            reason = await receive_until(ws, deadline, self.options.timeouts.read_idle, self._on_message)
        finally:
            await self._stop_snapshot()
            await ws.close()
        return SessionEnd(reason, self.report.messages > received)

    def on_drop(self, reason: str) -> None:
        self.open_gap("disconnect", reason, self.last_receive_ns, self.chain.last_update_id)
        count("mdp_capture_reconnects_total", 1, market=self.options.market)


async def record(options: CaptureOptions) -> CaptureReport:
    """Record for `options.duration_seconds`; the files and manifest are complete on return,
    also when cancelled (Ctrl-C)."""
    recorder = _Recorder(options, Manifest(options.out_dir))
    return await record_run(
        recorder,
        market=options.market,
        symbol=options.symbol.upper(),
        stream_url=redact_url(options.stream_url),
        snapshot_url=redact_url(options.snapshot_url),
        encrypted=options.master_key is not None,
    )

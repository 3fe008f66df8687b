"""What every exchange's recorder keeps while it records (the hourly files, the report, the gap
that is open), and the run around it that leaves the files and the manifest complete."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from websockets.asyncio.client import ClientConnection

from market_pipeline.core.telemetry.telemetry import count
from market_pipeline.vendors.live_capture.manifest import Manifest
from market_pipeline.vendors.live_capture.session import Connection, SessionEnd, reconnecting
from market_pipeline.vendors.live_capture.writer import HourlyCaptureWriter

log = logging.getLogger(__name__)


@dataclass
class CaptureReport:
    manifest_path: Path
    files: list[dict[str, Any]] = field(default_factory=list)
    gaps: list[dict[str, Any]] = field(default_factory=list)
    connections: int = 0
    snapshots: int = 0
    messages: int = 0


class CaptureRecorder:
    """One capture's connections, files, report and open gap; an exchange's recorder adds what it
    does on each connection (`session`) and after a drop (`on_drop`)."""

    def __init__(self, writer: HourlyCaptureWriter, manifest: Manifest, market: str, connection: Connection) -> None:
        self.writer = writer
        self.manifest = manifest
        self.market = market
        self.connection = connection
        self.report = CaptureReport(manifest.path)
        self.last_receive_ns: int | None = None
        self.gap: dict[str, Any] | None = None  # open until the feed is whole again

    async def session(self, ws: ClientConnection, deadline: float) -> SessionEnd:
        """Record one connection, until the deadline or until it drops."""
        raise NotImplementedError

    def on_drop(self, reason: str) -> None:
        raise NotImplementedError

    async def run(self) -> CaptureReport:
        await reconnecting(self.connection, self.session, self.on_drop)
        return self.report

    def open_gap(self, kind: str, reason: str, from_ns: int | None, last_update_id: int | None) -> None:
        self.close_gap()
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

    def close_gap(self) -> None:
        if self.gap is not None:
            self.manifest.add_gap(self.gap)
            self.report.gaps.append(self.gap)
            self.gap = None

    def write(self, receive_ns: int, line: str) -> bool:
        """Write one line; True when it opened a new file (a new hour began)."""
        opened = self.writer.write(receive_ns, line)
        self.last_receive_ns = receive_ns
        if self.gap is not None and self.gap["to_ns"] is None:
            self.gap["to_ns"] = receive_ns
        return opened

    def finish(self) -> None:
        self.close_gap()  # a gap still open at the end has no resync
        self.writer.close()
        self.report.files = self.writer.files


async def record_run(recorder: CaptureRecorder, **run_info: Any) -> CaptureReport:
    """`recorder.run()` as one run of its manifest (`run_info` describes it); the files and the
    manifest are complete on return, also when cancelled (Ctrl-C): the open file is finished and
    recorded before leaving."""
    manifest = recorder.manifest
    run = manifest.start_run(**run_info, started_ns=time.time_ns(), ended_ns=None)
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
        count("mdp_capture_messages_total", report.messages, market=recorder.market)
        count("mdp_capture_gaps_total", len(report.gaps), market=recorder.market)

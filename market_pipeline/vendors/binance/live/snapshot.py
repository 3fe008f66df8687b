"""The REST depth snapshot: fetched in a worker thread, validated, kept as one capture line."""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request
from dataclasses import dataclass

TIMEOUT_SECONDS = 10.0
MAX_BODY_BYTES = 8 << 20  # 1000 levels a side are about 60 KiB


class SnapshotError(OSError):
    """The snapshot request failed or the answer is not a depth snapshot."""


@dataclass(frozen=True)
class DepthSnapshot:
    last_update_id: int
    line: str  # the JSON on one line, as the capture stores it


def fetch_snapshot(url: str, context: ssl.SSLContext) -> DepthSnapshot:
    """GET the depth snapshot (blocking; run it in a thread)."""
    request = urllib.request.Request(
        url, headers={"Accept": "application/json", "User-Agent": "market-pipeline-capture"}
    )
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS, context=context) as response:
            body = response.read(MAX_BODY_BYTES + 1)
    except urllib.error.HTTPError as exc:
        # 429/418: rate limited or banned; the caller backs off.
        raise SnapshotError(f"depth snapshot: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise SnapshotError(f"depth snapshot: {getattr(exc, 'reason', exc)}") from None
    if len(body) > MAX_BODY_BYTES:
        raise SnapshotError(f"depth snapshot: answer larger than {MAX_BODY_BYTES} bytes")
    return parse_snapshot(body)


def parse_snapshot(body: bytes) -> DepthSnapshot:
    try:
        text = body.decode("utf-8")
        obj = json.loads(text)
    except (UnicodeDecodeError, ValueError) as exc:
        raise SnapshotError(f"depth snapshot: not JSON: {exc}") from None
    if not isinstance(obj, dict) or not isinstance(obj.get("lastUpdateId"), int):
        raise SnapshotError(f"depth snapshot: no integer lastUpdateId in {text[:200]!r}")
    if not isinstance(obj.get("bids"), list) or not isinstance(obj.get("asks"), list):
        raise SnapshotError("depth snapshot: bids/asks missing")
    # Keep the exchange's bytes unless they span lines (the capture format is one line each).
    line = text.strip()
    if "\n" in line or "\r" in line:
        line = json.dumps(obj, separators=(",", ":"))
    return DepthSnapshot(obj["lastUpdateId"], line)

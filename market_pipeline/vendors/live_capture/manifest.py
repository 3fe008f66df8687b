"""`manifest.json` of a capture directory: every finished file with its SHA-256, every gap.

One manifest per output directory, extended by each run (so re-running into the same directory
keeps the earlier entries). It is rewritten atomically after every finished file, so after a
crash it still describes every complete file. Paths are relative to the directory.

    {"format": 1,
     "runs":  [{"run": 0, "market": "usdm", "symbol": "BTCUSDT", "started_ns": ..., "ended_ns": ...,
                "connections": 2, "snapshots": 3, "messages": 12345, "encrypted": false, ...}],
     "files": [{"run": 0, "path": "20240808T23/binance_usdm_btcusdt_20240808.gz", "sha256": "...",
                "bytes": ..., "lines": ..., "first_receive_ns": ..., "last_receive_ns": ...}],
     "gaps":  [{"run": 0, "kind": "disconnect", "reason": "...", "from_ns": ..., "to_ns": ...,
                "last_update_id": ..., "resumed_update_id": ..., "snapshot_update_id": ...}]}
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from market_pipeline.core.errors import IntegrityError
from market_pipeline.core.lake.files import write_text_atomic

MANIFEST_NAME = "manifest.json"
FORMAT = 1


class ManifestError(IntegrityError, ValueError):
    """An existing manifest that cannot be read; it is never overwritten."""


def sha256_file(path: Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


class Manifest:
    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir
        self.path = out_dir / MANIFEST_NAME
        self.data: dict[str, Any] = {"format": FORMAT, "runs": [], "files": [], "gaps": []}
        if self.path.exists():
            try:
                data = json.loads(self.path.read_text(encoding="utf-8"))
                if data.get("format") != FORMAT or not all(
                    isinstance(data.get(k), list) for k in ("runs", "files", "gaps")
                ):
                    raise ValueError(f"not a format {FORMAT} capture manifest")
            except (OSError, ValueError, AttributeError) as exc:
                raise ManifestError(
                    f"{self.path}: cannot read the existing manifest ({exc}); move it away or use another --out"
                ) from None
            self.data = data
        self.run = len(self.data["runs"])

    def start_run(self, **info: Any) -> dict[str, Any]:
        entry = {"run": self.run, **info}
        self.data["runs"].append(entry)
        self.save()
        return entry

    def add_file(self, path: Path, lines: int, first_ns: int, last_ns: int) -> dict[str, Any]:
        entry = {
            "run": self.run,
            "path": path.relative_to(self.out_dir).as_posix(),
            "sha256": sha256_file(path),
            "bytes": path.stat().st_size,
            "lines": lines,
            "first_receive_ns": first_ns,
            "last_receive_ns": last_ns,
        }
        self.data["files"].append(entry)
        self.save()
        return entry

    def add_gap(self, gap: dict[str, Any]) -> None:
        self.data["gaps"].append({"run": self.run, **gap})
        self.save()

    def taken_paths(self) -> set[str]:
        return {f["path"] for f in self.data["files"]}

    def save(self) -> None:
        write_text_atomic(self.path, json.dumps(self.data, indent=1) + "\n")


class CaptureManifestJournal:
    """Keeps capture manifests true while `market-pipeline rotate-key` re-encrypts their files
    (a `core.security.key_rotation.ReplacementJournal`): a file's `sha256` and `bytes` are those of
    its bytes on disk, so `sha256sum -c` against the manifest keeps passing after a rotation.

    Re-run-safe in two steps: before the rename the new digest goes into the entry as
    `rotating_sha256` (and `rotating_bytes`); after it, they become `sha256` and `bytes`. A rotation
    interrupted between the two finds the file under the new key next time, and `commit` finishes
    the entry when the file's digest is the one recorded as pending, and only then.
    """

    def __init__(self, roots: list[Path]) -> None:
        self.roots = [root.resolve() for root in roots]

    def _entry(self, path: Path) -> tuple[Manifest, dict[str, Any]] | None:
        """The manifest entry that lists `path`: in the nearest `manifest.json` above it (within the
        rotated roots) written by the capture, if any."""
        for directory in path.parents:
            if not any(directory == root or root in directory.parents for root in self.roots):
                return None
            if (directory / MANIFEST_NAME).is_file():
                try:
                    manifest = Manifest(directory)
                except ManifestError:
                    continue  # another tool's manifest.json (e.g. the capture source's cache)
                relative = path.relative_to(directory).as_posix()
                for entry in manifest.data["files"]:
                    if entry.get("path") == relative:
                        return manifest, entry
        return None

    def prepare(self, path: Path, replacement: Path) -> None:
        found = self._entry(path)
        if found is not None:
            manifest, entry = found
            entry["rotating_sha256"] = sha256_file(replacement)
            entry["rotating_bytes"] = replacement.stat().st_size
            manifest.save()

    def commit(self, path: Path) -> None:
        found = self._entry(path)
        if found is None or "rotating_sha256" not in found[1]:
            return
        manifest, entry = found
        if sha256_file(path) == entry["rotating_sha256"]:
            entry["sha256"], entry["bytes"] = entry.pop("rotating_sha256"), entry.pop("rotating_bytes")
            manifest.save()

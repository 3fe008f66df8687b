"""The manifest of a backup snapshot: what each file is, where it goes back, its size and SHA-256.

    <DIR>/market_pipeline-20240304T020000Z/manifest.json
    {"tool": "market_pipeline backup", "format": 1, "created_at": "2024-03-04T02:00:00.123456+00:00",
     "encrypted": false, "sources": {"data_dir": "/srv/data", "dagster_home": "/srv/dagster_home", ...},
     "parts": {"warehouse": {...}, "dagster_instance": {...}, ...},
     "files": [{"part": "checkpoints", "path": "data/lake/checkpoints/.../book.parquet",
                "root": "data_dir", "target": "lake/checkpoints/.../book.parquet",
                "size": 123, "sha256": "..."}, ...]}

`size` and `sha256` are those of the file as stored in the snapshot; with `--encrypt` the stored
file is the ciphertext and `plain_size`/`plain_sha256` describe what restore must get back.
The manifest is written last, so a snapshot without one is an unfinished backup.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath

from market_pipeline.core.errors import IntegrityError

MANIFEST_FILE = "manifest.json"
TOOL = "market_pipeline backup"
FORMAT = 1
SNAPSHOT_PREFIX = "market_pipeline-"
# Where a file goes back: the data dir ($PIPELINE_DATA_DIR) or the Dagster instance ($DAGSTER_HOME).
ROOTS = ("data_dir", "dagster_home")
_HASH_BLOCK = 1 << 20


class BackupManifestError(IntegrityError):
    """A snapshot whose manifest is missing, unreadable, not ours, or does not match its files."""


@dataclass(frozen=True)
class FileEntry:
    part: str  # warehouse, dagster_instance, checkpoints, captures, audit, alerts
    path: str  # inside the snapshot directory (POSIX, relative)
    root: str  # one of ROOTS
    target: str  # relative to the root
    size: int
    sha256: str
    plain_size: int | None = None  # only for encrypted files
    plain_sha256: str | None = None

    @property
    def content_size(self) -> int:
        return self.size if self.plain_size is None else self.plain_size

    @property
    def content_sha256(self) -> str:
        return self.sha256 if self.plain_sha256 is None else self.plain_sha256


@dataclass
class Manifest:
    created_at: str
    encrypted: bool
    sources: dict[str, str | None]
    parts: dict[str, dict[str, object]] = field(default_factory=dict)
    files: list[FileEntry] = field(default_factory=list)

    def to_json(self) -> str:
        body = {"tool": TOOL, "format": FORMAT, **asdict(self)}
        body["files"] = [{k: v for k, v in asdict(entry).items() if v is not None} for entry in self.files]
        return json.dumps(body, indent=1) + "\n"


def sha256_file(path: Path) -> tuple[int, str]:
    """(size, hex SHA-256) of the file at `path`, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as fh:
        while block := fh.read(_HASH_BLOCK):
            digest.update(block)
            size += len(block)
    return size, digest.hexdigest()


def read_manifest(snapshot: Path) -> Manifest:
    """The manifest of `snapshot`; BackupManifestError naming the file and what is wrong otherwise."""
    path = snapshot / MANIFEST_FILE
    try:
        body = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BackupManifestError(f"{path}: no manifest; {snapshot} is not a finished backup of this tool") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BackupManifestError(f"{path}: unreadable manifest ({exc})") from None
    if not isinstance(body, dict) or body.get("tool") != TOOL:
        raise BackupManifestError(f"{path}: not a manifest written by `market-pipeline backup`")
    if body.get("format") != FORMAT:
        raise BackupManifestError(f"{path}: manifest format {body.get('format')!r}, this version reads {FORMAT}")
    try:
        files = [FileEntry(**entry) for entry in body["files"]]
        manifest = Manifest(
            created_at=str(body["created_at"]),
            encrypted=bool(body["encrypted"]),
            sources=dict(body["sources"]),
            parts=dict(body["parts"]),
            files=files,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise BackupManifestError(f"{path}: malformed manifest ({type(exc).__name__}: {exc})") from None
    for entry in files:
        _check_entry(path, entry, manifest.encrypted)
    for name, values in (("path", [e.path for e in files]), ("target", [(e.root, e.target) for e in files])):
        if len(set(values)) != len(values):
            raise BackupManifestError(f"{path}: two file entries with the same {name}")
    return manifest


def _check_entry(path: Path, entry: FileEntry, encrypted: bool) -> None:
    """Refuse entries that would read or write outside the snapshot or the restore roots."""
    for name, value in (("path", entry.path), ("target", entry.target)):
        rel = PurePosixPath(value)
        if not value or rel.is_absolute() or ".." in rel.parts or rel.parts[0] == MANIFEST_FILE:
            raise BackupManifestError(f"{path}: file entry with unsafe {name} {value!r}")
    if entry.root not in ROOTS:
        raise BackupManifestError(
            f"{path}: {entry.path}: unknown root {entry.root!r} (expected one of {', '.join(ROOTS)})"
        )
    if encrypted != (entry.plain_sha256 is not None):
        raise BackupManifestError(
            f"{path}: {entry.path}: plain_sha256 must be given exactly when the backup is encrypted"
        )

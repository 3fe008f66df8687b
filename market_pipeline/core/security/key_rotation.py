"""Master-key rotation: re-encrypt every encrypted file under some directories to a new master key.

Two kinds of encrypted files: the crypto module's format (captures, `encrypt`, encrypted backups),
recognised by its magic header (crypto.MAGIC), and the encrypted lake's Parquet files (raw tables,
books, checkpoints and carry files, statistics, quarantined rows), recognised by Parquet's `PARE`
and rotated by `parquet_rotation.py`. Names do not matter.
The format records no key id, so a file's key is found by trying to authenticate its first chunk:
first with the new key (already rotated: skipped), then with the old one. A GCM tag that
authenticates under a key identifies that key (a forgery succeeds with probability 2^-128), so
this is as good as a stored key id and needs no format change.

Safety:
- Before anything is replaced, every file is classified; a file that opens with neither key stops
  the rotation with an error naming it, and nothing is rewritten.
- One file at a time: the old file's plaintext is streamed into a new encrypted temporary sibling
  (a fresh salt, so a fresh file key), that sibling is decrypted again with the new key and its
  plaintext SHA-256 compared with the old file's, and only then renamed over the file
  (core.lake.files.atomic_path). An interrupted rotation leaves every file whole, under one key or
  the other, and running it again finishes the rest.
- A `ReplacementJournal` hears about each replacement before and after the rename, so whoever
  records a file's bytes elsewhere (the capture manifest's SHA-256, vendors/live_capture/manifest.py)
  can follow, re-run-safely.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from market_pipeline.core.errors import CryptoError
from market_pipeline.core.lake import storage
from market_pipeline.core.lake.files import atomic_path
from market_pipeline.core.security import parquet_rotation
from market_pipeline.core.security.crypto import (
    CHUNK_SIZE,
    MAGIC,
    MASTER_KEY_ENV,
    NEW_MASTER_KEY_ENV,
    DecryptionError,
    EncryptingWriter,
    decrypt_chunks,
    is_encrypted,
)

# Files that are still being written are not rotated: atomic writes in progress (`.<name>.tmp-*`)
# and the capture hour being recorded (`*.partial`). The next rotation takes them.
PARTIAL_SUFFIX = ".partial"
TEMP_MARKER = ".tmp-"
ALREADY = "already under the new key"
ROTATED = "rotated"


class KeyRotationError(CryptoError):
    """Files that open with neither key, or the same key given twice; nothing was replaced."""


class ReplacementJournal(Protocol):
    """Told about each file the rotation replaces (and each one it finds already rotated)."""

    def prepare(self, path: Path, replacement: Path) -> None:
        """`replacement` (verified) is about to be renamed over `path`."""

    def commit(self, path: Path) -> None:
        """`path` is under the new key now (rotated by this run, or by an interrupted earlier one)."""


class _NoJournal:
    def prepare(self, path: Path, replacement: Path) -> None:
        pass

    def commit(self, path: Path) -> None:
        pass


@dataclass
class RotationReport:
    rotated: list[Path] = field(default_factory=list)
    already: list[Path] = field(default_factory=list)  # under the new key before this run
    in_progress: list[Path] = field(default_factory=list)  # still being written: left for the next run

    def summary(self) -> str:
        text = f"{len(self.rotated)} file(s) rotated, {len(self.already)} already under the new key"
        if self.in_progress:
            text += f", {len(self.in_progress)} still being written (not rotated; run again later)"
        return text


def _still_written(name: str) -> bool:
    return name.endswith(PARTIAL_SUFFIX) or (name.startswith(".") and TEMP_MARKER in name)


def _files_under(root: Path) -> Iterable[Path]:
    """Every regular file under `root` (symlinks not followed); a remote lake's objects by listing."""
    if storage.is_remote(root):
        yield from storage.iter_files(root)
        return
    for directory, _, names in os.walk(root):
        for name in names:
            path = Path(directory) / name
            if not path.is_symlink() and path.is_file():
                yield path.resolve()


def find_encrypted_files(roots: Iterable[Path]) -> tuple[list[Path], list[Path]]:
    """Every encrypted file under `roots` (by magic header), sorted, and the encrypted files left out
    because they are still being written."""
    found: set[Path] = set()
    busy: set[Path] = set()
    for root in roots:
        for path in _files_under(root):
            try:
                with path.open("rb") as fh:
                    head = fh.read(len(MAGIC))
            except OSError:
                continue  # vanished or unreadable: not ours to judge here
            if is_encrypted(head) or parquet_rotation.is_encrypted_parquet(head):
                (busy if _still_written(path.name) else found).add(path)
    return sorted(found, key=str), sorted(busy, key=str)


def _is_parquet(path: Path) -> bool:
    with path.open("rb") as fh:
        return parquet_rotation.is_encrypted_parquet(fh.read(len(parquet_rotation.PARQUET_MAGIC)))


def _opens_with(path: Path, key: bytes) -> DecryptionError | None:
    """None when `path` opens under the master key `key` (its first chunk authenticates, or for a
    lake Parquet file its footer decrypts), else the error."""
    if _is_parquet(path):
        return parquet_rotation.parquet_opens_with(path, key)
    with path.open("rb") as fh:
        chunks = decrypt_chunks(fh, key, path)
        try:
            next(chunks)
        except DecryptionError as exc:
            return exc
        finally:
            chunks.close()
    return None


def _plain_digest(chunks: Iterable[bytes], sink: Callable[[bytes], object] | None = None) -> str:
    digest = hashlib.sha256()
    for chunk in chunks:
        digest.update(chunk)
        if sink is not None:
            sink(chunk)
    return digest.hexdigest()


def rotate_file(path: Path, old_key: bytes, new_key: bytes, journal: ReplacementJournal) -> None:
    """Re-encrypt `path` from `old_key` to `new_key` in place, atomically and verified."""
    if _is_parquet(path):
        parquet_rotation.rotate_parquet(path, old_key, new_key)
        journal.commit(path)
        return
    with atomic_path(path) as tmp:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as sealed, path.open("rb") as source:
            writer = EncryptingWriter(sealed, new_key, CHUNK_SIZE)
            plain = _plain_digest(decrypt_chunks(source, old_key, path), writer.write)
            writer.close()
        with open(tmp, "rb") as check:
            if _plain_digest(decrypt_chunks(check, new_key, tmp)) != plain:
                raise DecryptionError(path, "the re-encrypted copy does not decrypt to the same bytes; not replaced")
        journal.prepare(path, tmp)
    journal.commit(path)


def rotate_tree(
    roots: Sequence[Path],
    old_key: bytes,
    new_key: bytes,
    journal: ReplacementJournal | None = None,
    progress: Callable[[str, Path], None] | None = None,
) -> RotationReport:
    """Rotate every encrypted file under `roots` from `old_key` to `new_key` (see the module doc).

    Raises KeyRotationError, before anything is replaced, when some file opens with neither key;
    DecryptionError naming the file when one turns out damaged past its first chunk (that file is
    left as it was, the ones before it are rotated: fix or move it away and run again).
    """
    if old_key == new_key:
        raise KeyRotationError(f"{NEW_MASTER_KEY_ENV} is the same key as {MASTER_KEY_ENV}; nothing to rotate")
    journal = journal or _NoJournal()
    files, busy = find_encrypted_files(roots)
    report = RotationReport(in_progress=busy)
    to_rotate: list[Path] = []
    unreadable: list[str] = []
    for path in files:
        if _opens_with(path, new_key) is None:
            report.already.append(path)
        elif (error := _opens_with(path, old_key)) is None:
            to_rotate.append(path)
        else:
            unreadable.append(f"{path}: {error.reason}")
    if unreadable:
        more = f"\n  ... and {len(unreadable) - 20} more" if len(unreadable) > 20 else ""
        listed = "\n  ".join(unreadable[:20]) + more
        raise KeyRotationError(
            f"{len(unreadable)} encrypted file(s) open with neither {MASTER_KEY_ENV} (old key) nor "
            f"{NEW_MASTER_KEY_ENV} (new key); nothing was replaced. Set the key that sealed them, or move "
            f"them out of the rotated directories:\n  {listed}"
        )
    for path in report.already:
        journal.commit(path)  # a run interrupted between rename and commit left this to do
        if progress:
            progress(ALREADY, path)
    for path in to_rotate:
        rotate_file(path, old_key, new_key, journal)
        report.rotated.append(path)
        if progress:
            progress(ROTATED, path)
    return report

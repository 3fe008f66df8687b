"""Resumable, verified download of one S3 object into the source's local cache.

Beside each cached file a sidecar (`.{name}.s3.json`) records the size and ETag it was
downloaded as; a file whose sidecar matches the current listing (and whose Parquet footer
reads) is not fetched again. A download goes to a temporary sibling and is renamed into
place only after its size, MD5 (single-part ETags) and Parquet footer check out, so an
interrupted or short download never becomes the cached file.

"Resumable" means exactly this: within one download, a transfer that breaks off is continued
by the next attempt from the first missing byte (a ranged GetObject appending to the same
temporary file, the MD5 carried over). Every GetObject is pinned to the ETag being downloaded
(`IfMatch`), so bytes of two versions are never joined: when the object changes mid-download
S3 answers 412, the partial bytes are dropped, a warning names the key, and the download starts
again from byte 0 of the new version. Nothing partial outlives the download: when the attempts
run out, or the process dies, the temporary file is removed and the next run starts from byte 0.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from botocore.exceptions import ClientError, HTTPClientError, IncompleteReadError

from market_pipeline.core.lake.files import atomic_path, write_text_atomic
from market_pipeline.core.telemetry.telemetry import count
from market_pipeline.vendors.crypto_lake.s3_client import S3Target, S3TargetFailed

log = logging.getLogger(__name__)

CHUNK_BYTES = 8 * 1024 * 1024


@dataclass(frozen=True)
class ListedObject:
    key: str
    size: int
    etag: str  # without quotes; "<hex>-<parts>" for multipart uploads


class S3IntegrityError(S3TargetFailed):
    """A file still failed verification after every attempt."""


class _BadDownload(Exception):
    """One attempt produced bytes that cannot be trusted; the reason says why."""


def sidecar_path(local: Path) -> Path:
    return local.with_name(f".{local.name}.s3.json")


def _footer_problem(path: Path) -> str | None:
    try:
        pq.read_metadata(path)
    except (pa.ArrowException, OSError) as exc:
        return f"Parquet footer unreadable ({exc})"
    return None


def is_current(local: Path, obj: ListedObject) -> bool:
    """The cached file is the listed object: same size and ETag as recorded, footer readable."""
    try:
        recorded = json.loads(sidecar_path(local).read_text(encoding="utf-8"))
        size_on_disk = local.stat().st_size
    except (OSError, ValueError):
        return False
    return (
        recorded.get("etag") == obj.etag
        and recorded.get("size") == obj.size == size_on_disk
        and _footer_problem(local) is None
    )


class _ObjectChanged(Exception):
    """The object's ETag is no longer the one being downloaded (S3 answered 412 to IfMatch)."""


@dataclass
class _Partial:
    """The temporary file's bytes so far: the first `received` bytes of `obj`'s version."""

    obj: ListedObject
    received: int = 0
    md5: Any = field(default_factory=lambda: hashlib.md5(usedforsecurity=False))

    def restart(self, obj: ListedObject) -> None:
        self.obj = obj
        self.received = 0
        self.md5 = hashlib.md5(usedforsecurity=False)


def _transfer(client, target: S3Target, partial: _Partial, tmp: Path) -> str | None:
    """Append the missing bytes of `partial.obj` to `tmp`; returns the object's server-side encryption.

    Request errors propagate (botocore already retried them); a body that breaks off or arrives
    wrong, and a changed object, are this module's to handle.
    """
    obj = partial.obj
    request = {"Bucket": target.bucket, "Key": obj.key, "IfMatch": f'"{obj.etag}"'}
    if partial.received:
        request["Range"] = f"bytes={partial.received}-"
    try:
        response = client.get_object(**request)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("PreconditionFailed", "412"):
            raise _ObjectChanged() from None
        raise
    body = response["Body"]
    if partial.received and not response.get("ContentRange", "").startswith(f"bytes {partial.received}-"):
        body.close()
        partial.restart(obj)
        raise _BadDownload("the server ignored the Range request; starting again from byte 0")
    try:
        with open(tmp, "ab" if partial.received else "wb") as fh:
            for chunk in body.iter_chunks(CHUNK_BYTES):
                fh.write(chunk)
                partial.md5.update(chunk)
                partial.received += len(chunk)
    except (IncompleteReadError, HTTPClientError) as exc:
        raise _BadDownload(f"transfer interrupted after {partial.received} of {obj.size} bytes: {exc}") from None
    if partial.received < obj.size:
        raise _BadDownload(f"size mismatch: received {partial.received} of {obj.size} bytes")
    return response.get("ServerSideEncryption")


def _verify(partial: _Partial, encryption: str | None, tmp: Path) -> None:
    """The complete file is the object; else the partial bytes are dropped (next attempt: byte 0)."""
    obj = partial.obj
    problem = None
    if partial.received != obj.size:
        problem = f"size mismatch: received {partial.received} of {obj.size} bytes"
    # A single-part upload's ETag is the MD5 of its bytes, except under SSE-KMS.
    elif "-" not in obj.etag and encryption != "aws:kms" and partial.md5.hexdigest() != obj.etag:
        problem = f"MD5 {partial.md5.hexdigest()} does not match ETag {obj.etag}"
    else:
        problem = _footer_problem(tmp)
    if problem:
        partial.restart(obj)
        raise _BadDownload(problem)


def _current_version(client, target: S3Target, key: str) -> ListedObject:
    head = client.head_object(Bucket=target.bucket, Key=key)
    return ListedObject(key, head["ContentLength"], head["ETag"].strip('"'))


def download_verified(client, target: S3Target, obj: ListedObject, local: Path, attempts: int) -> int:
    """Download `obj` to `local` atomically, retrying a bad transfer; returns the bytes written."""
    sidecar = sidecar_path(local)
    sidecar.unlink(missing_ok=True)  # the old record must not vouch for whatever lands next
    problems = []
    partial = _Partial(obj)
    with atomic_path(local) as tmp:  # one temporary file for every attempt: a retry resumes it
        for attempt in range(1, attempts + 1):
            try:
                encryption = _transfer(client, target, partial, tmp)
                _verify(partial, encryption, tmp)
            except _BadDownload as exc:
                problems.append(f"attempt {attempt}: {exc}")
                count("mdp_s3_download_retries_total", 1, target=target.role)
                log.warning("S3 download of %s failed verification (%s)", target.url(obj.key), exc)
                continue
            except _ObjectChanged:
                listed = partial.obj
                partial.restart(_current_version(client, target, obj.key))
                problem = (
                    f"{target.url(obj.key)} changed during the download (ETag {listed.etag} -> "
                    f"{partial.obj.etag}); starting again from byte 0 of the new version"
                )
                problems.append(f"attempt {attempt}: {problem}")
                count("mdp_s3_download_retries_total", 1, target=target.role)
                log.warning(problem)
                continue
            record = {
                "bucket": target.bucket,
                "key": obj.key,
                "size": partial.obj.size,
                "etag": partial.obj.etag,  # the version downloaded: the listed one unless it changed
                "served_by": target.label,
                "downloaded_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            }
            break
        else:
            raise S3IntegrityError(
                f"{target.url(obj.key)} ({target.label}): download failed verification {attempts} time(s); "
                f"no verified copy at {local}. " + "; ".join(problems)
            )
    write_text_atomic(sidecar, json.dumps(record, indent=2))
    return partial.obj.size

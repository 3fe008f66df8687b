"""Resumable, verified download of one S3 object into the source's local cache.

Beside each cached file a sidecar (`.{name}.s3.json`) records the size and ETag it was
downloaded as; a file whose sidecar matches the current listing (and whose Parquet footer
reads) is not fetched again. A download goes to a temporary sibling and is renamed into
place only after its size, MD5 (single-part ETags) and Parquet footer check out, so an
interrupted or short download never becomes the cached file.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from botocore.exceptions import HTTPClientError, IncompleteReadError

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


def _get_into(client, target: S3Target, obj: ListedObject, tmp: Path) -> None:
    # Request errors propagate (botocore already retried them); only a body that breaks off
    # or arrives wrong is this module's to retry.
    response = client.get_object(Bucket=target.bucket, Key=obj.key)
    served_etag = response.get("ETag", "").strip('"')
    if served_etag != obj.etag:
        response["Body"].close()
        raise _BadDownload(f"object changed since it was listed (ETag {obj.etag} -> {served_etag})")
    md5 = hashlib.md5(usedforsecurity=False)
    received = 0
    try:
        with open(tmp, "wb") as fh:
            for chunk in response["Body"].iter_chunks(CHUNK_BYTES):
                fh.write(chunk)
                md5.update(chunk)
                received += len(chunk)
    except (IncompleteReadError, HTTPClientError) as exc:
        raise _BadDownload(f"transfer interrupted after {received} of {obj.size} bytes: {exc}") from None
    if received != obj.size:
        raise _BadDownload(f"size mismatch: received {received} of {obj.size} bytes")
    # A single-part upload's ETag is the MD5 of its bytes, except under SSE-KMS.
    if "-" not in obj.etag and response.get("ServerSideEncryption") != "aws:kms":
        if md5.hexdigest() != obj.etag:
            raise _BadDownload(f"MD5 {md5.hexdigest()} does not match ETag {obj.etag}")
    problem = _footer_problem(tmp)
    if problem:
        raise _BadDownload(problem)


def download_verified(client, target: S3Target, obj: ListedObject, local: Path, attempts: int) -> int:
    """Download `obj` to `local` atomically, retrying a bad transfer; returns the bytes written."""
    sidecar = sidecar_path(local)
    sidecar.unlink(missing_ok=True)  # the old record must not vouch for whatever lands next
    problems = []
    for attempt in range(1, attempts + 1):
        try:
            with atomic_path(local) as tmp:
                _get_into(client, target, obj, tmp)
        except _BadDownload as exc:
            problems.append(f"attempt {attempt}: {exc}")
            count("mdp_s3_download_retries_total", 1, target=target.role)
            log.warning("S3 download of %s failed verification (%s)", target.url(obj.key), exc)
            continue
        record = {
            "bucket": target.bucket,
            "key": obj.key,
            "size": obj.size,
            "etag": obj.etag,
            "served_by": target.label,
            "downloaded_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        }
        write_text_atomic(sidecar, json.dumps(record, indent=2))
        return obj.size
    raise S3IntegrityError(
        f"{target.url(obj.key)} ({target.label}): download failed verification {attempts} time(s); "
        f"no verified copy at {local}. " + "; ".join(problems)
    )

"""The `s3` vendor source: Crypto Lake's bucket (or any S3-compatible store), cached locally.

For one table, instrument and day it lists
`s3://{bucket}/{prefix}/{table}/exchange=X/symbol=Y/dt=D/`, downloads the Parquet files it does
not already hold (same size and ETag) into `$PIPELINE_DATA_DIR/sources/s3/...` and returns
them; the raw importer then validates them into the lake.

Failover: when the primary endpoint/bucket fails (unreachable, 5xx after botocore's retries,
access denied, a file that keeps failing verification) the fallback is used, and for the rest
of this source's life the failed target is tried last. An empty day is an answer, not a failure:
it raises MissingSourceData without asking the fallback. `served_by` records which target
served each table/instrument/day, for the raw asset's metadata.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from botocore.exceptions import ClientError, HTTPClientError, NoCredentialsError
from botocore.exceptions import ConnectionError as BotoConnectionError

from market_pipeline.core.instruments import Instrument
from market_pipeline.core.lake.paths import partition_dir
from market_pipeline.core.telemetry import progress
from market_pipeline.core.telemetry.telemetry import count
from market_pipeline.vendors.base import LAKE_TABLES, MissingSourceData
from market_pipeline.vendors.crypto_lake.config import S3Settings
from market_pipeline.vendors.crypto_lake.s3_client import (
    S3Access,
    S3AccessDenied,
    S3CredentialsError,
    S3SourceError,
    S3Target,
    S3TargetFailed,
    targets,
)
from market_pipeline.vendors.crypto_lake.s3_download import ListedObject, download_verified, is_current
from market_pipeline.vendors.lake_shaped import LakeShapedBooks

log = logging.getLogger(__name__)

T = TypeVar("T")

DENIED_CODES = {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "AllAccessDisabled", "ExpiredToken"}


class S3Source(LakeShapedBooks):
    name = "s3"
    tables = LAKE_TABLES

    def __init__(self, settings: S3Settings, cache_root: Path):
        self.settings = settings
        self.cache_root = cache_root
        self.targets = targets(settings)
        # (table, instrument key, day) -> label of the target that served it, e.g. "fallback: s3://b at ..."
        self.served_by: dict[tuple[str, str, dt.date], str] = {}
        self._access: S3Access | None = None
        self._clients: dict[S3Target, object] = {}
        self._failed: set[S3Target] = set()
        self._objects: dict[Path, str] = {}  # local copy -> the s3:// URL of the object it holds

    # -- VendorSource --------------------------------------------------------------------

    def fetch(self, table: str, instrument: Instrument, day: dt.date) -> list[Path]:
        prefix = self._key_prefix(table, instrument, day)
        local_dir = partition_dir(self.cache_root, table, instrument.exchange, instrument.symbol, day)

        def from_target(target: S3Target) -> list[Path]:
            objects = self._list_parquet(target, prefix)
            if not objects:
                raise MissingSourceData(
                    self.name, table, instrument, day, f"nothing under {target.url(prefix)}, {target.label}"
                )
            return [self._local_copy(target, prefix, obj, local_dir) for obj in objects]

        paths, target = self._with_failover(from_target)
        self.served_by[(table, instrument.key, day)] = target.label
        return paths

    def origin(self, table: str, instrument: Instrument, day: dt.date, path: Path) -> str:
        """The object a downloaded copy holds (its cache path when `fetch` did not return it)."""
        return self._objects.get(path, str(path))

    def available_days(self, table: str, instrument: Instrument) -> list[dt.date]:
        """Days present at the source (the `dt=` prefixes), for sensors that look for new data."""
        prefix = self._key_prefix(table, instrument)

        def from_target(target: S3Target) -> list[dt.date]:
            def list_days(client) -> list[dt.date]:
                days = []
                pages = client.get_paginator("list_objects_v2").paginate(
                    Bucket=target.bucket, Prefix=prefix, Delimiter="/"
                )
                for page in pages:
                    for common in page.get("CommonPrefixes", []):
                        name = common["Prefix"][len(prefix) :].rstrip("/")
                        try:
                            days.append(dt.date.fromisoformat(name.removeprefix("dt=")))
                        except ValueError:
                            continue  # not a day partition
                return sorted(days)

            return self._call(target, prefix, list_days)

        days, _ = self._with_failover(from_target)
        return days

    # -- internals -----------------------------------------------------------------------

    def _key_prefix(self, table: str, instrument: Instrument, day: dt.date | None = None) -> str:
        parts = [
            self.settings.prefix.strip("/"),
            table,
            f"exchange={instrument.exchange}",
            f"symbol={instrument.symbol}",
        ]
        if day is not None:
            parts.append(f"dt={day.isoformat()}")
        return "/".join(p for p in parts if p) + "/"

    def _list_parquet(self, target: S3Target, prefix: str) -> list[ListedObject]:
        def listing(client) -> list[ListedObject]:
            objects = []
            for page in client.get_paginator("list_objects_v2").paginate(Bucket=target.bucket, Prefix=prefix):
                for item in page.get("Contents", []):
                    if item["Key"].endswith(".parquet"):
                        objects.append(ListedObject(item["Key"], item["Size"], item["ETag"].strip('"')))
                    else:
                        log.debug("S3 source ignores %s: not a Parquet file", target.url(item["Key"]))
            return sorted(objects, key=lambda o: o.key)

        return self._call(target, prefix, listing)

    def _local_copy(self, target: S3Target, prefix: str, obj: ListedObject, local_dir: Path) -> Path:
        relative = obj.key[len(prefix) :]
        if any(part in ("", ".", "..") for part in relative.split("/")):
            raise S3SourceError(f"{target.url(obj.key)}: key does not map to a local file name")
        local = local_dir / relative
        self._objects[local] = target.url(obj.key)
        if is_current(local, obj):
            count("mdp_s3_files_cached_total", 1, target=target.role)
            return local
        with progress.task(f"downloading {target.url(obj.key)} ({obj.size / 1e6:,.1f} MB)"):
            size = self._call(
                target,
                obj.key,
                lambda client: download_verified(client, target, obj, local, self.settings.max_attempts),
            )
        count("mdp_s3_files_downloaded_total", 1, target=target.role)
        count("mdp_s3_bytes_downloaded_total", size, target=target.role)
        return local

    @property
    def credentials_source(self) -> str:
        """Where the credentials come from (never the credentials themselves)."""
        return self._resolved_access().credentials_source

    def _resolved_access(self) -> S3Access:
        if self._access is None:
            self._access = S3Access.resolve(self.settings)
        return self._access

    def _client(self, target: S3Target):
        if target not in self._clients:
            self._clients[target] = self._resolved_access().client(target)
        return self._clients[target]

    def _call(self, target: S3Target, key: str, operation: Callable[..., T]) -> T:
        """Run `operation(client)`, turning botocore failures into errors that say what to check."""
        try:
            return operation(self._client(target))
        except NoCredentialsError:
            raise S3CredentialsError(
                f"S3 source: no AWS credentials for {target.url(key)}; set AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY (environment or .env) or AWS_PROFILE, or PIPELINE_S3__ANONYMOUS=true"
            ) from None
        except ClientError as exc:
            raise self._client_error(exc, target, key) from None
        except (BotoConnectionError, HTTPClientError) as exc:
            raise S3TargetFailed(
                f"{target.label} unreachable for {target.url(key)} after {self.settings.max_attempts} attempt(s): {exc}"
            ) from None

    def _client_error(self, exc: ClientError, target: S3Target, key: str) -> S3SourceError:
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
        operation = exc.operation_name
        if status == 403 or code in DENIED_CODES:
            return S3AccessDenied(
                f"access denied ({code or status}) on {operation} of {target.url(key)} "
                f"(bucket {target.bucket!r}, prefix {self.settings.prefix!r}, {target.label}); "
                f"credentials from {self.credentials_source}. Check that these credentials may "
                "list and read that prefix, or set PIPELINE_S3__ANONYMOUS=true for a public bucket."
            )
        if code == "NoSuchBucket":
            return S3TargetFailed(f"{target.label}: bucket {target.bucket!r} does not exist")
        if status >= 500:
            return S3TargetFailed(
                f"{target.label}: server error {status} {code} on {operation} of {target.url(key)} "
                f"after {self.settings.max_attempts} attempt(s)"
            )
        return S3SourceError(
            f"{target.label}: {operation} of {target.url(key)} failed: {code} {error.get('Message', '')}"
        )

    def _with_failover(self, operation: Callable[[S3Target], T]) -> tuple[T, S3Target]:
        """Run `operation` against each target in turn until one does not fail; targets that
        already failed in this source's life go last."""
        failures: list[S3TargetFailed] = []
        ordered = sorted(self.targets, key=lambda t: t in self._failed)
        for position, target in enumerate(ordered):
            try:
                return operation(target), target
            except S3TargetFailed as exc:
                self._failed.add(target)
                failures.append(exc)
                if position + 1 < len(ordered):
                    count("mdp_s3_failovers_total", 1, failed=target.role)
                    log.warning("S3 source: %s failed, trying %s: %s", target.label, ordered[position + 1].label, exc)
        if len(failures) == 1:
            raise failures[0]
        raise S3TargetFailed("every S3 target failed:\n" + "\n".join(f"- {f}" for f in failures))

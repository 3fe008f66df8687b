"""A remote lake's store that cannot be used, as one ConfigurationError naming the setting and what to check.

The lake's bucket (PIPELINE_LAKE_URL) is reached through pyarrow's S3 filesystem (listings, reads)
and boto3 (uploads), which each word a failure their own way: pyarrow as an OSError whose text
holds the AWS error name (`AWS Error NETWORK_CONNECTION during ListObjectsV2 operation: ...`), boto3
as botocore exceptions. `translated` turns the three faults an operator meets on day one (endpoint
unreachable, credentials refused, bucket missing) into `LakeStoreUnavailable`, whose message names
the dependency, the variable to fix and what to check; the original stays its `__cause__` and is
logged with its traceback at debug level. Other errors are left as they are.

A store named by a setting that cannot be used is a configuration problem (exit 3), like the DuckLake
catalog of PIPELINE_CATALOG_URL; a vendor's store (PIPELINE_SOURCE=s3) is a source problem (exit 4,
vendors/crypto_lake/s3_client.py). No message carries a credential: they name where the
credentials came from, never a key.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager

from market_pipeline.core.errors import ConfigurationError
from market_pipeline.core.security.scrub import redact_url

LAKE_URL_SETTING = "PIPELINE_LAKE_URL"
ENDPOINT_VARIABLES = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")  # the SDKs' order: the S3-specific one first
CREDENTIALS_TO_CHECK = "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE)"

# pyarrow's wording of an AWS error: `AWS Error <NAME> during <Operation> operation: <details>`.
_ARROW_ERROR = re.compile(r"AWS Error (?P<name>[A-Z_]+) during (?P<operation>\w+) operation:?\s*(?P<detail>.*)", re.S)
_UNREACHABLE = {"NETWORK_CONNECTION", "ENDPOINT_RESOLUTION_FAILURE", "REQUEST_TIMEOUT", "SLOW_DOWN"}
_REFUSED = {
    "ACCESS_DENIED",
    "INVALID_ACCESS_KEY_ID",
    "SIGNATURE_DOES_NOT_MATCH",
    "INVALID_CLIENT_TOKEN_ID",
    "EXPIRED_TOKEN",
    "MISSING_AUTHENTICATION_TOKEN",
    "INVALID_SIGNATURE",
    "UNRECOGNIZED_CLIENT",
    "ACCESS_DENIED_EXCEPTION",
}
_MISSING_BUCKET = {"NO_SUCH_BUCKET"}
_BOTO_REFUSED = {
    "AccessDenied",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "InvalidToken",
    "ExpiredToken",
    "403",
    "Forbidden",
}

log = logging.getLogger(__name__)


class LakeStoreUnavailable(ConfigurationError):
    """The bucket of PIPELINE_LAKE_URL cannot be used: its endpoint is unreachable, it refuses the
    credentials, or it does not exist."""


def endpoint_description() -> str:
    """The endpoint in use, as the variable that sets it (without any user:password@), or AWS itself."""
    for name in ENDPOINT_VARIABLES:
        value = os.environ.get(name)
        if value:
            return f"{name}={redact_url(value)}"
    return "AWS S3 (no AWS_ENDPOINT_URL set)"


def credentials_source() -> str:
    """Where boto3's chain found credentials, in words (never a key)."""
    import boto3

    session = boto3.Session()
    try:
        credentials = session.get_credentials()
    except Exception:  # a broken profile: the failure itself says more than this description
        return "the AWS credential chain"
    if credentials is None:
        return "nowhere (no AWS credentials found)"
    return describe_credential_method(credentials.method, session.profile_name)


def describe_credential_method(method: str, profile: str) -> str:
    """botocore's name of a credential provider in words, for messages."""
    if method == "env":
        return "environment variables AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY"
    if method == "shared-credentials-file":
        return f"AWS profile {profile!r} in the shared credentials file"
    if method == "config-file":
        return f"AWS profile {profile!r} in the AWS config file"
    return f"boto3 credential chain ({method}, profile {profile!r})"


def _fault(exc: BaseException) -> tuple[str, str] | None:
    """(kind, detail) of a store fault: kind is 'unreachable', 'refused' or 'missing bucket'."""
    from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError
    from botocore.exceptions import ConnectionError as BotoConnectionError

    seen: BaseException | None = exc
    while seen is not None:  # boto3's S3UploadFailedError wraps the ClientError as its context
        if isinstance(seen, (EndpointConnectionError, BotoConnectionError)):
            return "unreachable", str(seen)
        if isinstance(seen, NoCredentialsError):
            return "refused", "no AWS credentials found"
        if isinstance(seen, ClientError):
            error = seen.response.get("Error", {})
            code = str(error.get("Code", ""))
            status = seen.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            detail = f"{code or status} on {seen.operation_name}"
            if code == "NoSuchBucket":
                return "missing bucket", detail
            if code in _BOTO_REFUSED or status == 403:
                return "refused", detail
            return None
        if isinstance(seen, OSError):
            found = _ARROW_ERROR.search(str(seen))
            if found is not None:
                name, operation = found["name"], found["operation"]
                detail = " ".join(found["detail"].split())
                if name in _UNREACHABLE:
                    return "unreachable", f"{name} on {operation}: {detail}"
                if name in _REFUSED:
                    return "refused", f"{name} on {operation}"
                if name in _MISSING_BUCKET:
                    return "missing bucket", f"{name} on {operation}"
        seen = seen.__cause__ or seen.__context__
    return None


def store_error(exc: BaseException, path: object) -> LakeStoreUnavailable | None:
    """The LakeStoreUnavailable that `exc`, raised reaching `path` (an s3:// path of the lake), amounts to."""
    fault = _fault(exc)
    if fault is None:
        return None
    kind, detail = fault
    return unavailable(kind, str(path).removeprefix("s3://").partition("/")[0], detail)


def unavailable(kind: str, bucket: str, detail: str) -> LakeStoreUnavailable:
    """The error of one store fault (`kind` as `_fault` names it), naming the settings to check."""
    where = f"the lake's bucket {bucket!r} ({LAKE_URL_SETTING}) at {endpoint_description()}"
    if kind == "unreachable":
        what = (
            f"cannot reach {where} ({detail}); check that the store is up and that "
            f"{' or '.join(ENDPOINT_VARIABLES)} names its endpoint"
        )
    elif kind == "refused":
        what = (
            f"{where} refused the credentials ({detail}; credentials from {credentials_source()}); "
            f"check {CREDENTIALS_TO_CHECK} and that they may list, read and write the lake's prefix"
        )
    else:
        what = (
            f"{where} does not exist ({detail}); create the bucket, or correct {LAKE_URL_SETTING} "
            f"(or {ENDPOINT_VARIABLES[1]})"
        )
    return LakeStoreUnavailable(what)


@contextmanager
def translated(path: object) -> Iterator[None]:
    """Raise the store faults of the block as LakeStoreUnavailable (the original as its cause, its
    traceback in the debug log); other errors pass through unchanged."""
    try:
        yield
    except Exception as exc:
        error = store_error(exc, path)
        if error is None:
            raise
        log.debug("the lake's store failed: %s", error, exc_info=True)
        raise error from exc

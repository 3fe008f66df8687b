"""boto3 clients for the S3 source: credentials, retries and the errors an operator can act on.

Credentials come only from boto3's own chain (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY /
AWS_SESSION_TOKEN, AWS_PROFILE and the ~/.aws files, instance roles) or, when the environment
names none, from the same AWS_* variables in the working directory's `.env` (pydantic-settings
reads only PIPELINE_* from it, so boto3 would not see them). No message ever carries a secret:
errors name the *source* of the credentials, never a key.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import boto3
from botocore import UNSIGNED
from botocore.config import Config
from botocore.exceptions import ProfileNotFound
from dotenv import dotenv_values

from market_pipeline.core.errors import SourceError
from market_pipeline.core.lake.store_errors import describe_credential_method
from market_pipeline.core.security.scrub import redact_url
from market_pipeline.vendors.crypto_lake.config import S3Settings

AWS_CREDENTIAL_VARIABLES = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE")
DOTENV_FILE = Path(".env")


class S3SourceError(SourceError):
    """The S3 source cannot serve data; the message says what to check."""


class S3CredentialsError(S3SourceError):
    """No usable AWS credentials (the same for every endpoint, so no failover)."""


class S3TargetFailed(S3SourceError):
    """One endpoint/bucket failed (unreachable, 5xx after retries, denied, bad bytes): try the fallback."""


class S3AccessDenied(S3TargetFailed):
    pass


@dataclass(frozen=True)
class S3Target:
    """One place the vendor files can be read from."""

    role: str  # "primary" or "fallback"
    bucket: str
    endpoint_url: str | None

    @property
    def label(self) -> str:
        where = redact_url(self.endpoint_url) if self.endpoint_url else "AWS S3"
        return f"{self.role}: s3://{self.bucket} at {where}"

    def url(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"


def targets(settings: S3Settings) -> list[S3Target]:
    """The primary, then the fallback when either a fallback endpoint or bucket is configured."""
    result = [S3Target("primary", settings.bucket, settings.endpoint_url)]
    if settings.fallback_endpoint_url or settings.fallback_bucket:
        result.append(
            S3Target(
                "fallback",
                settings.fallback_bucket or settings.bucket,
                settings.fallback_endpoint_url or settings.endpoint_url,
            )
        )
    return result


def _session_from_dotenv(region: str) -> tuple[boto3.Session, str] | None:
    """A session from AWS_* lines of `.env`, used only when the environment names no credentials."""
    if not DOTENV_FILE.is_file():
        return None
    values = {k: v for k, v in dotenv_values(DOTENV_FILE).items() if k in AWS_CREDENTIAL_VARIABLES and v}
    if values.get("AWS_ACCESS_KEY_ID") and values.get("AWS_SECRET_ACCESS_KEY"):
        session = boto3.Session(
            aws_access_key_id=values["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=values["AWS_SECRET_ACCESS_KEY"],
            aws_session_token=values.get("AWS_SESSION_TOKEN"),
            region_name=region,
        )
        return session, "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY in .env"
    if values.get("AWS_PROFILE"):
        session = boto3.Session(profile_name=values["AWS_PROFILE"], region_name=region)
        return session, f"AWS profile {values['AWS_PROFILE']!r} (AWS_PROFILE in .env)"
    return None


@dataclass
class S3Access:
    """A boto3 session (or unsigned access) and a secret-free description of its credentials."""

    session: boto3.Session
    credentials_source: str
    settings: S3Settings

    @classmethod
    def resolve(cls, settings: S3Settings) -> S3Access:
        if settings.anonymous:
            return cls(boto3.Session(region_name=settings.region), "anonymous (unsigned requests)", settings)
        environ_names_credentials = any(os.environ.get(name) for name in ("AWS_ACCESS_KEY_ID", "AWS_PROFILE"))
        dotenv = None if environ_names_credentials else _session_from_dotenv(settings.region)
        try:
            if dotenv is not None:
                session, source = dotenv
            else:
                session = boto3.Session(region_name=settings.region)
                source = ""
            credentials = session.get_credentials()
        except ProfileNotFound as exc:
            raise S3CredentialsError(f"S3 source: {exc}; set AWS_PROFILE to a profile in ~/.aws") from None
        if credentials is None:
            raise S3CredentialsError(
                f"S3 source: no AWS credentials found for s3://{settings.bucket}/{settings.prefix}. "
                "Set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (environment or .env) or AWS_PROFILE, "
                "or PIPELINE_S3__ANONYMOUS=true for a public bucket."
            )
        if not source:
            source = describe_credential_method(credentials.method, session.profile_name)
        return cls(session, source, settings)

    def client(self, target: S3Target):  # -> botocore S3 client (its type is generated at runtime)
        config = Config(
            region_name=self.settings.region,
            retries={"mode": self.settings.retry_mode, "max_attempts": self.settings.max_attempts},
            connect_timeout=self.settings.connect_timeout_seconds,
            read_timeout=self.settings.read_timeout_seconds,
            # S3-compatible stores (MinIO, a loopback server) rarely resolve bucket subdomains.
            s3={"addressing_style": "path"} if target.endpoint_url else None,
            signature_version=UNSIGNED if self.settings.anonymous else None,
        )
        return self.session.client("s3", endpoint_url=target.endpoint_url, config=config)

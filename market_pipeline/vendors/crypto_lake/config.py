"""Settings of the Crypto Lake sources: a local copy of the lake (`PIPELINE_LOCAL_DIR`) and the
vendor's S3 bucket (`PIPELINE_S3__*`)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class S3Settings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    bucket: str = "qnt.data"
    prefix: str = "market-data/cryptofeed"
    region: str = "eu-west-1"
    endpoint_url: str | None = None
    # Failover: tried when the primary endpoint or bucket fails; the one used is recorded in metadata.
    fallback_endpoint_url: str | None = None
    fallback_bucket: str | None = None
    anonymous: bool = False  # unsigned requests, for the vendor's public sample bucket
    # botocore's retry mode and attempts per request; a file failing verification is also
    # downloaded at most max_attempts times.
    retry_mode: Literal["standard", "adaptive"] = "standard"
    max_attempts: int = Field(5, ge=1, le=20)
    connect_timeout_seconds: float = Field(10.0, gt=0)
    read_timeout_seconds: float = Field(60.0, gt=0)

    @field_validator("endpoint_url", "fallback_endpoint_url")
    @classmethod
    def _check_endpoint(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("must be an http(s) URL")  # no echo: URLs can carry credentials
        return value


class CryptoLakeConfig(BaseModel):
    """The pipeline settings' fields for the Crypto Lake vendors."""

    local_dir: Path | None = None
    s3: S3Settings = Field(default_factory=S3Settings)


def local_problems(settings) -> list[str]:
    if settings.local_dir is None:
        return ["PIPELINE_SOURCE=local needs PIPELINE_LOCAL_DIR"]
    return []

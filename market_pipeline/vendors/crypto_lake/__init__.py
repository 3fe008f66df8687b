"""Crypto Lake: the vendor's `trades`, `book` and `book_delta_v2` tables, from a local copy of
its lake (`local`) or from its S3 bucket (`s3`)."""

import os

from market_pipeline.vendors.base import Vendor, directory_problem
from market_pipeline.vendors.crypto_lake.config import CryptoLakeConfig, local_problems


def _build_local(settings):
    from market_pipeline.vendors.crypto_lake.local import LocalLakeSource

    return LocalLakeSource(settings.local_dir)


def _build_s3(settings):
    from market_pipeline.vendors.crypto_lake.s3 import S3Source  # boto3 loads only when used

    return S3Source(settings.s3, settings.data_dir / "sources" / "s3")


LOCAL = Vendor(
    name="local",
    description="a directory laid out like Crypto Lake's lake",
    build=_build_local,
    config=CryptoLakeConfig,
    problems=local_problems,
    environment=lambda settings: directory_problem("PIPELINE_LOCAL_DIR", settings.local_dir),
    describe=lambda settings: str(settings.local_dir.resolve()) if settings.local_dir else "?",
    update_ids=True,  # Binance's sequence_number is the exchange update id
)


def _describe_s3(settings) -> str:
    s3 = settings.s3
    endpoint = f", endpoint {s3.endpoint_url}" if s3.endpoint_url else ""
    keys = "set" if os.environ.get("AWS_ACCESS_KEY_ID") and os.environ.get("AWS_SECRET_ACCESS_KEY") else "not set"
    profile = f", profile {os.environ['AWS_PROFILE']}" if os.environ.get("AWS_PROFILE") else ""
    return f"s3://{s3.bucket}/{s3.prefix}, region {s3.region}{endpoint}; aws access key {keys}{profile}"


S3 = Vendor(
    name="s3",
    description="Crypto Lake's S3 bucket",
    build=_build_s3,
    config=CryptoLakeConfig,
    describe=_describe_s3,
    update_ids=True,  # Binance's sequence_number is the exchange update id
)

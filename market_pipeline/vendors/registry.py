"""Build the configured vendor source."""

from __future__ import annotations

from market_pipeline.settings import Instrument, PipelineSettings
from market_pipeline.vendors.base import VendorSource
from market_pipeline.vendors.crypto_lake.local import LocalLakeSource


CRYPTO_LAKE_TABLES = frozenset({"trades", "book", "book_delta_v2"})


def build_source(settings: PipelineSettings) -> VendorSource:
    if settings.source == "synthetic":
        from market_pipeline.vendors.synthetic.source import SyntheticSource

        return SyntheticSource(settings.synthetic, settings.data_dir / "sources" / "synthetic")
    if settings.source == "local":
        assert settings.local_dir is not None  # enforced by settings validation
        return LocalLakeSource(settings.local_dir)
    if settings.source == "s3":
        from market_pipeline.vendors.crypto_lake.s3 import S3Source  # boto3 loads only when used

        return S3Source(settings.s3_settings, settings.data_dir / "sources" / "s3")
    if settings.source == "capture":
        from market_pipeline.vendors.binance.source import CaptureSource

        assert settings.capture_dir is not None  # enforced by settings validation
        return CaptureSource(settings.capture_dir, settings.data_dir / "sources" / "capture", settings.lake_dir)
    raise ValueError(f"PIPELINE_SOURCE={settings.source} is not a known source")  # settings validation prevents it


def provides(source: VendorSource, table: str) -> bool:
    """Whether the source has `table` at all; sources without a `tables` attribute serve the
    Crypto Lake tables the raw stage started with."""
    return table in getattr(source, "tables", CRYPTO_LAKE_TABLES)


def sequence_semantics(settings: PipelineSettings, instrument: Instrument) -> str:
    """What the source's sequence numbers can prove: `contiguous` (+1 per message) or `monotonic`."""
    if settings.source == "synthetic":
        from market_pipeline.vendors.synthetic.source import SyntheticSource

        return SyntheticSource.sequence_semantics
    return instrument.spec.sequence

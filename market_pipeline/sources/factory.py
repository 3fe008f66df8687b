"""Build the configured vendor source."""

from __future__ import annotations

from market_pipeline.settings import Instrument, PipelineSettings
from market_pipeline.sources.base import VendorSource
from market_pipeline.sources.local import LocalLakeSource


def build_source(settings: PipelineSettings) -> VendorSource:
    if settings.source == "synthetic":
        from market_pipeline.sources.synthetic.source import SyntheticSource

        return SyntheticSource(settings.synthetic, settings.data_dir / "sources" / "synthetic")
    if settings.source == "local":
        assert settings.local_dir is not None  # enforced by settings validation
        return LocalLakeSource(settings.local_dir)
    raise NotImplementedError(
        f"PIPELINE_SOURCE={settings.source} is not available in this version of market_pipeline"
    )


def sequence_semantics(settings: PipelineSettings, instrument: Instrument) -> str:
    """What the source's sequence numbers can prove: `contiguous` (+1 per message) or `monotonic`."""
    if settings.source == "synthetic":
        from market_pipeline.sources.synthetic.source import SyntheticSource

        return SyntheticSource.sequence_semantics
    return instrument.spec.sequence

"""The reference source of `PIPELINE_SOURCES`, built with its own area of the lake
(`lake/reference/source=<name>/`) as its lake, apart from the primary source's tables and books."""

from __future__ import annotations

from market_pipeline.core.lake.paths import reference_lake_dir
from market_pipeline.settings import PipelineSettings, SettingsView
from market_pipeline.vendors.base import VendorSource
from market_pipeline.vendors.registry import get_vendor


def reference_source(settings: PipelineSettings, name: str) -> tuple[SettingsView, VendorSource]:
    """The settings with the reference area as the lake (the importer and the vendor take
    `lake_dir` from them), and the source `name` built from them."""
    view = SettingsView(settings, lake_dir=reference_lake_dir(settings.lake_dir, name))
    return view, get_vendor(name).build(view)

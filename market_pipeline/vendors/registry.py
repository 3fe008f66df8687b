"""Every vendor by its `PIPELINE_SOURCE` name. Adding a vendor: its package and one line here."""

from __future__ import annotations

from market_pipeline.vendors import binance, crypto_lake, synthetic, tardis
from market_pipeline.vendors.base import Vendor, VendorSource

VENDORS: dict[str, Vendor] = {
    vendor.name: vendor
    for vendor in (synthetic.VENDOR, crypto_lake.LOCAL, crypto_lake.S3, binance.VENDOR, tardis.VENDOR)
}


def vendor_configs() -> tuple[type, ...]:
    """The vendors' settings models, each once: their fields join the pipeline settings."""
    configs: list[type] = []
    for vendor in VENDORS.values():
        if vendor.config is not None and vendor.config not in configs:
            configs.append(vendor.config)
    return tuple(configs)


def get_vendor(name: str) -> Vendor:
    try:
        return VENDORS[name]
    except KeyError:
        raise ValueError(f"unknown source {name!r}; known: {', '.join(sorted(VENDORS))}") from None


def build_source(settings) -> VendorSource:
    """The configured vendor's source (`settings.source`)."""
    return get_vendor(settings.source).build(settings)

"""Deterministic synthetic vendor: a seeded market simulator writing every vendor format we read,
with faults on demand and the true book kept as ground truth."""

from market_pipeline.vendors.base import Vendor
from market_pipeline.vendors.synthetic.config import SyntheticConfig


def _build(settings):
    from market_pipeline.vendors.synthetic.source import SyntheticSource

    return SyntheticSource(settings.synthetic, settings.data_dir / "sources" / "synthetic")


def _describe(settings) -> str:
    syn = settings.synthetic
    faults = {k: v for k, v in syn.faults.model_dump().items() if v and k != "days"}
    fault_text = ", ".join(f"{k}={v}" for k, v in faults.items()) or "none"
    return f"profile {syn.profile}, seed {syn.seed}, faults: {fault_text}"


VENDOR = Vendor(
    name="synthetic",
    description="seeded simulator, generated on demand (the demo and the tests)",
    build=_build,
    config=SyntheticConfig,
    describe=_describe,
    update_ids=True,  # message sequence numbers, which its captures carry as update ids
)

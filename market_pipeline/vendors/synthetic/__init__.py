"""Deterministic synthetic vendor source: a seeded market simulator writing a vendor-like lake."""

from market_pipeline.vendors.synthetic.generate import SyntheticDay, generate_day

__all__ = ["SyntheticDay", "generate_day"]

"""Vendor sources: where the raw stage gets vendor-lake files from."""

"""`pipeline_metrics` (filled in by the observability work)."""

observability_assets: list = []

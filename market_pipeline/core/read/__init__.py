"""The lake read API's machinery (no Dagster): partitions by instrument and day, lazy polars scans
that open only the files of the days asked for, as-of joins and batched replay. The public entry
point is `market_pipeline.lake` (docs/research.md)."""

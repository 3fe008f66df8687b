"""Tests of the Dagster stages (market_pipeline.defs), their settings and the code location."""

"""Tests of market_pipeline.core (and the read API on it): no Dagster run needed."""

"""Tests of the `market-pipeline` commands and the benchmark."""

"""Tests of the vendor sources: Binance captures, Tardis files, the synthetic vendor, S3."""

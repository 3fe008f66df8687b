"""`python -m market_pipeline.cli ...` is the same as the `market-pipeline` console script."""

from market_pipeline.cli.main import console

console()

"""`python -m market_pipeline.cli ...` is the same as the `market-pipeline` console script."""

import sys

from market_pipeline.cli.main import main

sys.exit(main())

"""`python -m market_pipeline.bench`."""

import sys

from market_pipeline.bench import main

sys.exit(main())

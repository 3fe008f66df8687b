"""How a range of days is split into runs: the backfill policy every daily asset shares.

`market_pipeline.definitions` builds it from `backfill_days_per_run` (PIPELINE_BACKFILL_DAYS_PER_RUN)
and hands it to each stage's builder next to the partitions definition.
"""

from __future__ import annotations

import dagster as dg

# One run for the whole range: what `dagster asset materialize --partition-range` and the CLI need.
SINGLE_RUN = dg.BackfillPolicy.single_run()


def backfill_policy(days_per_run: int | None) -> dg.BackfillPolicy:
    """None: one run per backfill (`single_run`); N: runs of at most N days (`multi_run(N)`)."""
    return SINGLE_RUN if days_per_run is None else dg.BackfillPolicy.multi_run(days_per_run)

"""A step's reads of a remote lake: each object fetched once (core/lake/local_copies.py), the requests
counted and reported.

`@reads_lake` wraps the body of a step (`fn(context, settings, ...)`, returning its result or
yielding its outputs and check evaluations): the body runs inside `local_copies` under
`<data_dir>/tmp/lake-copies/`: the run's copies in `run-<run_id>/` (kept for its later steps while
they fit `PIPELINE_LAKE_COPIES_MAX_GB`, removed when the run ends), the step's own beside them
(removed when the step ends, also when it fails: the copies are the bucket's objects). The step's
requests to the bucket (its worker processes' too, `parallel.run_tasks`) are recorded as
`mdp_lake_requests_total`, `mdp_lake_get_requests_total` and `mdp_lake_get_bytes_total` per stage
(the step's op: the asset, multi-asset or check), logged, and added to each output's metadata
(`LAKE_READS_METADATA`): the step's figures so far, which with a range run cover all its days. On
a local lake the figures are 0 and no metric is recorded.
"""

from __future__ import annotations

import functools
import inspect
import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import dagster as dg

from market_pipeline.core.lake import local_copies, storage
from market_pipeline.core.lake.scratch import LAKE_COPIES, run_copies_name
from market_pipeline.core.telemetry import telemetry
from market_pipeline.settings import PipelineSettings

# Output metadata keys: the step's GetObjects, the bytes they returned, and all its requests to the bucket.
LAKE_READS_METADATA = ("lake_get_requests", "lake_get_bytes", "lake_requests")


class StepReads:
    """The requests of one step so far (`counts`), from the process's counts when it started."""

    def __init__(self) -> None:
        self._start = local_copies.request_counts()

    @property
    def counts(self) -> local_copies.RequestCounts:
        return local_copies.request_counts() - self._start

    def metadata(self) -> dict[str, int]:
        counts = self.counts
        return dict(zip(LAKE_READS_METADATA, (counts.gets, counts.get_bytes, counts.requests), strict=True))


@contextmanager
def step_lake_reads(settings: PipelineSettings, stage: str, run_id: str, log: Any) -> Iterator[StepReads]:
    """The block's lake reads through one set of local copies; its requests recorded at the end."""
    reads = StepReads()
    if not storage.remote_lake_in_use():
        yield reads
        return
    root = settings.data_dir / LAKE_COPIES
    copies = local_copies.Copies(
        kept=root / run_copies_name(run_id),
        step=root / f"{stage}-{os.getpid()}-{uuid.uuid4().hex[:8]}",
        budget=int(settings.lake_copies_max_gb * 2**30),
    )
    try:
        with local_copies.local_copies(copies):
            yield reads
    finally:
        counts = reads.counts
        telemetry.count("mdp_lake_requests_total", counts.requests, stage=stage)
        footers = counts.ranged_gets  # a step's only ranged GETs: footers (`local_copies.local_footer`)
        telemetry.count("mdp_lake_get_requests_total", counts.gets - footers, stage=stage, part="object")
        telemetry.count("mdp_lake_get_requests_total", footers, stage=stage, part="footer")
        telemetry.count("mdp_lake_get_bytes_total", counts.get_bytes, stage=stage)
        telemetry.flush()  # after the body's own flush: a step process may end right after the step
        log.info(
            f"{stage}: {counts.gets - footers} lake object(s) and {footers} footer(s) fetched "
            f"({counts.get_bytes} bytes), {counts.requests} request(s) to the bucket"
        )


def reads_lake(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Run a step body `fn(context, settings, ...)` inside `step_lake_reads`, its outputs carrying the
    step's request figures (a returned result through `context.add_output_metadata`, a yielded
    `dg.Output` with them added; check evaluations pass unchanged)."""
    if inspect.isgeneratorfunction(fn):

        @functools.wraps(fn)
        def yielding(context: Any, settings: PipelineSettings, *args: Any, **kwargs: Any) -> Iterator[Any]:
            with step_lake_reads(settings, _stage(context), context.run.run_id, context.log) as reads:
                for item in fn(context, settings, *args, **kwargs):
                    if isinstance(item, dg.Output):
                        item = item.with_metadata({**item.metadata, **reads.metadata()})
                    yield item

        return yielding

    @functools.wraps(fn)
    def returning(context: Any, settings: PipelineSettings, *args: Any, **kwargs: Any) -> Any:
        with step_lake_reads(settings, _stage(context), context.run.run_id, context.log) as reads:
            result = fn(context, settings, *args, **kwargs)
            context.add_output_metadata(reads.metadata())
        return result

    return returning


def _stage(context: dg.AssetExecutionContext | dg.AssetCheckExecutionContext) -> str:
    return context.op_execution_context.op_def.name

"""`finished_run_scratch`: a run the daemon launched that ends successfully leaves no scratch.

When a run succeeds, its `runs/<run_id>/` directory (PIPELINE_SCRATCH_PER_RUN) and the S3 vendor's
downloads of its days are removed (`core/lake/scratch.py`); a failed run keeps them for inspection
until `market-pipeline cleanup`. `market-pipeline run` does the same itself when its run succeeds.
PIPELINE_KEEP_SCRATCH=true keeps them after a success too.
"""

from __future__ import annotations

import datetime as dt

import dagster as dg

from market_pipeline.core.lake.scratch import remove_run_scratch
from market_pipeline.settings import PipelineSettings

# The tags Dagster puts on a run of one partition or of a partition range.
_PARTITION_TAG = "dagster/partition"
_RANGE_TAGS = ("dagster/asset_partition_range_start", "dagster/asset_partition_range_end")


def run_days(tags: dict[str, str]) -> list[dt.date]:
    """The days a run covered, from its partition tags (none for an unpartitioned run)."""
    try:
        if all(tag in tags for tag in _RANGE_TAGS):
            start, end = (dt.date.fromisoformat(tags[tag]) for tag in _RANGE_TAGS)
            return [start + dt.timedelta(days=i) for i in range((end - start).days + 1)]
        if _PARTITION_TAG in tags:
            return [dt.date.fromisoformat(tags[_PARTITION_TAG])]
    except ValueError:  # not a day partition
        return []
    return []


def remove_succeeded_run_scratch(settings: PipelineSettings, run_id: str, days: list[dt.date]) -> list[str]:
    """Remove a successful run's scratch unless PIPELINE_KEEP_SCRATCH; one line per removed directory."""
    if settings.keep_scratch:
        return []
    removed = remove_run_scratch(settings.data_dir, run_id, days)
    return [f"removed {entry.kind} scratch {entry.path} ({entry.size:,} bytes)" for entry in removed]


def _finished_run_scratch(context: dg.RunStatusSensorContext, pipeline: dg.ResourceParam[PipelineSettings]) -> None:
    run = context.dagster_run
    for line in remove_succeeded_run_scratch(pipeline, run.run_id, run_days(dict(run.tags))):
        context.log.info(line)


def build_scratch_sensor(interval_seconds: int) -> dg.SensorDefinition:
    return dg.run_status_sensor(
        run_status=dg.DagsterRunStatus.SUCCESS,
        name="finished_run_scratch",
        minimum_interval_seconds=interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Removes a successful run's scratch: runs/<run_id>/ and the S3 vendor's downloads of its days.",
    )(_finished_run_scratch)

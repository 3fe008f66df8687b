"""`market-pipeline cleanup`: list and remove the scratch runs left (core/lake/scratch.py).

A successful run removes its own scratch when it ends; a failed one keeps it for inspection, and a
killed step leaves its lake copies. This lists each piece (kind, path, bytes, age) and removes it,
except the directory of a run the Dagster instance (DAGSTER_HOME, when set) says is still going.
"""

from __future__ import annotations

import os
import time

from market_pipeline.cli.common import EXIT_OK
from market_pipeline.core.lake.scratch import ScratchEntry, kept_scratch, remove_scratch


def _unfinished_runs() -> set[str]:
    """Ids of the runs the DAGSTER_HOME instance has not finished (none without DAGSTER_HOME)."""
    if not os.environ.get("DAGSTER_HOME", "").strip():
        return set()
    import dagster as dg

    from market_pipeline.cli.dagster_instance import open_instance

    finished = {dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED}
    going = [status for status in dg.DagsterRunStatus if status not in finished]
    with open_instance() as instance:
        return {record.dagster_run.run_id for record in instance.get_run_records(dg.RunsFilter(statuses=going))}


def cleanup_command(dry_run: bool, older_than_hours: float) -> int:
    from market_pipeline.settings import load_settings

    settings = load_settings()
    now = time.time()
    going = _unfinished_runs()
    chosen: list[ScratchEntry] = []
    for entry in kept_scratch(settings.data_dir):
        if entry.run_id is not None and entry.run_id in going:
            print(f"kept      {entry.kind:<11} {entry.path}: run {entry.run_id} has not finished")
        elif entry.age_hours(now) < older_than_hours:
            print(f"kept      {entry.kind:<11} {entry.path}: written {entry.age_hours(now):.1f} h ago")
        else:
            chosen.append(entry)
    verb = "would remove" if dry_run else "removed"
    for entry in chosen:
        print(f"{verb:<9} {entry.kind:<11} {entry.path} ({entry.size:,} bytes, {entry.age_hours(now):.1f} h old)")
    if not dry_run:
        remove_scratch(chosen)
    total = sum(entry.size for entry in chosen)
    print(f"{verb} {len(chosen)} scratch director{'y' if len(chosen) == 1 else 'ies'}, {total:,} bytes")
    return EXIT_OK

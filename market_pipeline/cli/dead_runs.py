"""Runs this CLI executes in its own process, and those whose process is gone.

A run executed in this process has no run worker the daemon could watch, so each run records the
host and process that execute it as tags, and every new run first recovers the runs of this host
whose process is gone (kill -9, power loss, OOM killer): it marks them failed and frees the
concurrency-pool slots they held, which would otherwise block the `duckdb` steps of every later
run (docs/operations.md, "Recovering from a crash").
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import TYPE_CHECKING

from market_pipeline.defs.common.partitions import RANGE_END_TAG, RANGE_START_TAG

if TYPE_CHECKING:
    import dagster as dg

LAUNCHED_BY_TAG = "market_pipeline/launched_by"
# Who executes an in-process run: the host, the process id and the process's start time (clock
# ticks since boot, from /proc/<pid>/stat), so a pid reused by another process is not taken for it.
HOST_TAG = "market_pipeline/host"
PID_TAG = "market_pipeline/pid"
PID_START_TAG = "market_pipeline/pid_start"


def _process_start(pid: int) -> str | None:
    """The start time of process `pid` (clock ticks since boot), None when it is not known."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2 :].split()  # the command name may hold spaces and parentheses
    return fields[19] if len(fields) > 19 else None


def launcher_tags() -> dict[str, str]:
    """The run tags naming this process, for `dead_run_reason` to judge later."""
    tags = {HOST_TAG: socket.gethostname(), PID_TAG: str(os.getpid())}
    start = _process_start(os.getpid())
    if start is not None:
        tags[PID_START_TAG] = start
    return tags


def dead_run_reason(run: dg.DagsterRun) -> str | None:
    """Why an unfinished run launched by this CLI on this host can no longer be running (None when it
    may be: another host, no tags, or its process is alive)."""
    host, pid_text = run.tags.get(HOST_TAG), run.tags.get(PID_TAG)
    if host != socket.gethostname() or pid_text is None or not pid_text.isdigit():
        return None
    pid = int(pid_text)
    recorded_start = run.tags.get(PID_START_TAG)
    current_start = _process_start(pid)
    if recorded_start is not None and current_start is not None and current_start != recorded_start:
        return f"process {pid} on {host} that executed it is gone (the pid now belongs to another process)"
    if pid == os.getpid():
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return f"process {pid} on {host} that executed it is gone"
    except OSError:  # PermissionError: alive, another user's
        return None
    return None


def _claimed_slots(instance: dg.DagsterInstance, run_id: str) -> list[str]:
    """The pools in which `run_id` holds slots (one entry per slot)."""
    storage = instance.event_log_storage
    if not storage.supports_global_concurrency_limits:
        return []
    pools = []
    for pool in sorted(storage.get_concurrency_keys()):
        pools += [pool for slot in storage.get_concurrency_info(pool).claimed_slots if slot.run_id == run_id]
    return pools


def recover_run(instance: dg.DagsterInstance, run: dg.DagsterRun, reason: str) -> str:
    """Mark a dead run failed and free its pool slots; returns the line to print."""
    held = _claimed_slots(instance, run.run_id)
    instance.report_run_failed(
        run,
        message=f"Marked failed by market-pipeline before a new run: the {reason}, so the run was killed "
        "(kill -9, power loss, out of memory) before it could record its end. Its pool slots were freed.",
    )
    instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
    days = run.tags.get(RANGE_START_TAG, "?") + ".." + run.tags.get(RANGE_END_TAG, "?")
    slots = f"{len(held)} slot(s) of pool {', '.join(sorted(set(held)))}" if held else "no pool slot"
    return (
        f"recovered dead run {run.run_id} ({run.tags.get(LAUNCHED_BY_TAG, 'unknown')}, {days}, "
        f"was {run.status.value}): the {reason}; marked it FAILURE and freed {slots}"
    )


def recover_dead_runs(instance: dg.DagsterInstance) -> list[str]:
    """Recover every unfinished run of this host whose process is gone; one line per run."""
    import dagster as dg

    unfinished = [
        dg.DagsterRunStatus.NOT_STARTED,
        dg.DagsterRunStatus.STARTING,
        dg.DagsterRunStatus.STARTED,
        dg.DagsterRunStatus.CANCELING,
    ]
    records = instance.get_run_records(
        filters=dg.RunsFilter(statuses=unfinished, tags={HOST_TAG: socket.gethostname()})
    )
    lines = []
    for record in records:
        reason = dead_run_reason(record.dagster_run)
        if reason is not None:
            lines.append(recover_run(instance, record.dagster_run, reason))
    return lines + free_slots_of_dead_holders(instance)


def free_slots_of_dead_holders(instance: dg.DagsterInstance, run_ids: set[str] | None = None) -> list[str]:
    """Recover the runs holding pool slots (all of them, or `run_ids`) whose process on this host is
    gone: an unfinished one is failed and freed, a finished one (failed by hand in the UI, say) freed."""
    storage = instance.event_log_storage
    if run_ids is None:
        if not storage.supports_global_concurrency_limits:
            return []
        run_ids = {
            slot.run_id
            for pool in storage.get_concurrency_keys()
            for slot in storage.get_concurrency_info(pool).claimed_slots
        }
    lines = []
    for run_id in sorted(run_ids):
        run = instance.get_run_by_id(run_id)
        reason = dead_run_reason(run) if run is not None else None
        if run is None or reason is None:
            continue
        if not run.is_finished:
            lines.append(recover_run(instance, run, reason))
            continue
        held = _claimed_slots(instance, run_id)
        storage.free_concurrency_slots_for_run(run_id)
        lines.append(
            f"freed {len(held)} slot(s) of pool {', '.join(sorted(set(held)))} still held by run {run_id} "
            f"({run.status.value}): the {reason}"
        )
    return lines


def describe_holder(instance: dg.DagsterInstance, run_id: str, step_key: str) -> str:
    run = instance.get_run_by_id(run_id)
    if run is None:
        return f"run {run_id} (step {step_key}), which is not in this instance"
    who = run.tags.get(LAUNCHED_BY_TAG) or "launched from Dagster"
    where = f", process {run.tags[PID_TAG]} on {run.tags[HOST_TAG]}" if PID_TAG in run.tags else ""
    return f"run {run_id} ({who}{where}, {run.status.value}, step {step_key})"

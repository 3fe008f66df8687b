"""How many cores this process may use: its CPU affinity, narrowed by a cgroup CPU quota.

A container started with `docker run --cpus 2` (or given a Kubernetes CPU limit) keeps its
affinity to every core of the host but is throttled to the quota, so counting the affinity alone
would start more worker processes than can run at once, each with its own memory. The quota is
read the way the kernel applies it: from this process's cgroup and every ancestor up to the
hierarchy's root (a limit on a parent binds its children), for cgroup v2 (`cpu.max`) and v1
(`cpu.cfs_quota_us` over `cpu.cfs_period_us`). A file that is absent or unreadable is no limit.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator
from pathlib import Path

CGROUP_MOUNT = Path("sys/fs/cgroup")


def usable_cores(root: Path = Path("/")) -> int:
    """Cores to plan for: the CPU affinity (all cores where the platform has none), at most the
    cgroup quota rounded down, at least 1."""
    try:
        cores = len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # no sched_getaffinity on this platform
        cores = os.cpu_count() or 1
    quota = cgroup_cpu_quota(root)
    if quota is not None:
        cores = min(cores, math.floor(quota))
    return max(1, cores)


def cgroup_cpu_quota(root: Path = Path("/")) -> float | None:
    """The tightest CPU quota, in cores, on this process's cgroups and their ancestors; None
    when there is none (or no cgroup file to read)."""
    try:
        lines = (root / "proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    quotas: list[float] = []
    for line in lines:
        fields = line.split(":", 2)  # hierarchy id, controllers, path
        if len(fields) != 3:
            continue
        _, controllers, path = fields
        if not controllers:  # the v2 unified hierarchy
            quotas += _quotas(root / CGROUP_MOUNT, path, _v2_quota)
        elif "cpu" in controllers.split(","):
            # v1 mounts the controller as "cpu,cpuacct" (with a "cpu" link) or alone as "cpu".
            mount = root / CGROUP_MOUNT / controllers
            quotas += _quotas(mount if mount.is_dir() else root / CGROUP_MOUNT / "cpu", path, _v1_quota)
    return min(quotas, default=None)


def _quotas(mount: Path, path: str, read: Callable[[Path], float | None]) -> Iterator[float]:
    """The quotas on the cgroup `path` under `mount` and on each of its ancestors. Inside a
    container the path may name a cgroup the container cannot see (its own is the mount's
    root): directories that do not exist are skipped."""
    directory = mount / path.strip("/")
    for candidate in (directory, *directory.parents):
        if candidate.is_dir() and (quota := read(candidate)) is not None:
            yield quota
        if candidate == mount:
            return


def _v2_quota(directory: Path) -> float | None:
    """`cpu.max` holds "<quota> <period>" in microseconds, or "max <period>" for no limit."""
    try:
        quota, period = (directory / "cpu.max").read_text().split()
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError, ZeroDivisionError):
        return None


def _v1_quota(directory: Path) -> float | None:
    """`cpu.cfs_quota_us` is -1 for no limit."""
    try:
        quota = int((directory / "cpu.cfs_quota_us").read_text())
        period = int((directory / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return None if quota <= 0 or period <= 0 else quota / period

"""Usable cores: the CPU affinity narrowed by a cgroup CPU quota (`docker run --cpus`), read
from the process's cgroup and its ancestors, for cgroup v2 and v1. Each case builds the files
the kernel would show under a scratch root."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from market_pipeline.core.cpu_limit import cgroup_cpu_quota, usable_cores


def _write(root: Path, relative: str, text: str) -> None:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_v2_quota_of_a_container(tmp_path: Path):
    """A private cgroup namespace: the container's own cgroup is the root, `docker --cpus 1.5`."""
    _write(tmp_path, "proc/self/cgroup", "0::/\n")
    _write(tmp_path, "sys/fs/cgroup/cpu.max", "150000 100000\n")
    assert cgroup_cpu_quota(tmp_path) == 1.5


def test_v2_tightest_limit_among_ancestors(tmp_path: Path):
    _write(tmp_path, "proc/self/cgroup", "0::/system.slice/pipeline.service\n")
    _write(tmp_path, "sys/fs/cgroup/cpu.max", "max 100000\n")
    _write(tmp_path, "sys/fs/cgroup/system.slice/cpu.max", "300000 100000\n")
    _write(tmp_path, "sys/fs/cgroup/system.slice/pipeline.service/cpu.max", "max 100000\n")
    assert cgroup_cpu_quota(tmp_path) == 3.0
    _write(tmp_path, "sys/fs/cgroup/system.slice/pipeline.service/cpu.max", "200000 100000\n")
    assert cgroup_cpu_quota(tmp_path) == 2.0


def test_v2_without_limit(tmp_path: Path):
    _write(tmp_path, "proc/self/cgroup", "0::/user.slice\n")
    _write(tmp_path, "sys/fs/cgroup/cpu.max", "max 100000\n")
    assert cgroup_cpu_quota(tmp_path) is None


def test_v1_quota_and_unlimited(tmp_path: Path):
    """cgroup v1 without a cgroup namespace: /proc names the host's path of the container's
    cgroup, which the container sees as the mount's root."""
    _write(tmp_path, "proc/self/cgroup", "4:cpu,cpuacct:/docker/abc123\n3:memory:/docker/abc123\n0::/\n")
    _write(tmp_path, "sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us", "-1\n")
    _write(tmp_path, "sys/fs/cgroup/cpu,cpuacct/cpu.cfs_period_us", "100000\n")
    assert cgroup_cpu_quota(tmp_path) is None
    _write(tmp_path, "sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us", "250000\n")
    assert cgroup_cpu_quota(tmp_path) == 2.5


def test_unreadable_or_absent_files_are_no_limit(tmp_path: Path):
    assert cgroup_cpu_quota(tmp_path) is None  # no /proc/self/cgroup
    _write(tmp_path, "proc/self/cgroup", "0::/\n")
    assert cgroup_cpu_quota(tmp_path) is None  # no cpu.max
    _write(tmp_path, "sys/fs/cgroup/cpu.max", "garbage\n")
    assert cgroup_cpu_quota(tmp_path) is None
    _write(tmp_path, "proc/self/cgroup", "not a cgroup line\n0::/\n")
    _write(tmp_path, "sys/fs/cgroup/cpu.max", "100000 100000\n")
    assert cgroup_cpu_quota(tmp_path) == 1.0  # the line it cannot read is skipped


def test_usable_cores_is_the_affinity_narrowed_by_the_quota(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)))
    _write(tmp_path, "proc/self/cgroup", "0::/\n")
    assert usable_cores(tmp_path) == 8  # no cpu.max: the affinity
    _write(tmp_path, "sys/fs/cgroup/cpu.max", "250000 100000\n")
    assert usable_cores(tmp_path) == 2  # 2.5 cores of quota: two whole ones
    _write(tmp_path, "sys/fs/cgroup/cpu.max", "50000 100000\n")
    assert usable_cores(tmp_path) == 1  # at least one
    _write(tmp_path, "sys/fs/cgroup/cpu.max", "1600000 100000\n")
    assert usable_cores(tmp_path) == 8  # a quota above the affinity does not add cores


def test_this_machine_reads_without_error():
    """Whatever this host's cgroups say, the count is a whole number of cores it may use."""
    assert 1 <= usable_cores() <= (os.cpu_count() or 1)

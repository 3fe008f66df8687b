"""The Dagster UI for tests: a webserver process on a free 127.0.0.1 port, its GraphQL API (and the
queries the UI's pages make), and stopping it with every process it started (test_ui_graphql.py,
test_ui.py)."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

SERVER_START_TIMEOUT_S = 300  # two shared cores: loading the code location can take a while
# Lines no UI session should print: Dagster's notes on APIs the project uses on purpose (filtered in
# defs/common/dagster_compat.py) and code servers replaced under the daemon (cli/ui.py).
NOISE = ("PreviewWarning", "BetaWarning", "No heartbeat received")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def graphql(url: str, query: str, **variables: object) -> dict:
    body = json.dumps({"query": query, "variables": variables}).encode()
    request = urllib.request.Request(f"{url}/graphql", body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        answer = json.load(response)
    assert "errors" not in answer, answer["errors"]
    return answer["data"]


ASSET_NODE = """
query ($key: AssetKeyInput!) {
  assetNodeOrError(assetKey: $key) { __typename }
}"""


def wait_for_asset(url: str, asset: str, proc: subprocess.Popen, log: Path) -> None:
    """Wait until the webserver answers and has loaded the code location with `asset`; then no
    "Join the Dagster community" dialog over the pages."""
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[0]} exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if graphql(url, ASSET_NODE, key={"path": [asset]})["assetNodeOrError"]["__typename"] == "AssetNode":
                graphql(url, "mutation { setNuxSeen }")
                return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(1)
    raise RuntimeError(f"{url} did not load the code location with {asset} within {SERVER_START_TIMEOUT_S} s")


def stop(proc: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    """Stop `proc`'s process group (it was started with start_new_session=True)."""
    os.killpg(proc.pid, sig)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def noise_lines(log: Path) -> list[str]:
    return [line for line in log.read_text(errors="replace").splitlines() if any(n in line for n in NOISE)]


DIALOG_DAYS = 90  # the backfill dialog's default window: the last 90 partitions


CHECK_PARTITION_STATUSES = """
query ($key: AssetKeyInput!) {
  assetNodeOrError(assetKey: $key) { ... on AssetNode {
    assetChecksOrError { ... on AssetChecks { checks { name partitionStatuses {
      __typename
      ... on AssetCheckTimePartitionStatuses { ranges { startKey endKey status } }
    } } } }
  } }
}"""


def per_day(ranges: list[dict]) -> dict[str, str]:
    """Time-partition status ranges expanded to one status per day."""
    statuses = {}
    for r in ranges:
        day, end = dt.date.fromisoformat(r["startKey"]), dt.date.fromisoformat(r["endKey"])
        while day <= end:
            statuses[day.isoformat()] = r["status"]
            day += dt.timedelta(days=1)
    return statuses


def check_statuses(url: str, asset: str) -> dict[str, dict[str, str]]:
    """Per check of `asset`, its status per day, as the check's Partitions tab draws it."""
    data = graphql(url, CHECK_PARTITION_STATUSES, key={"path": [asset]})
    checks = data["assetNodeOrError"]["assetChecksOrError"]["checks"]
    return {c["name"]: per_day(c["partitionStatuses"]["ranges"]) for c in checks if c["partitionStatuses"]}


LATEST_BY_PARTITION = """
query ($key: AssetKeyInput!, $partitions: [String!]!) {
  assetNodeOrError(assetKey: $key) { ... on AssetNode {
    latestMaterializationByPartition(partitions: $partitions) {
      partition runId timestamp
      metadataEntries { label ... on IntMetadataEntry { intValue } }
    }
  } }
}"""


def latest_by_partition(url: str, asset: str, days: list[dt.date]) -> list[dict]:
    """What the asset's plots by partition draw: the latest materialization of each day."""
    data = graphql(url, LATEST_BY_PARTITION, key={"path": [asset]}, partitions=[d.isoformat() for d in days])
    return data["assetNodeOrError"]["latestMaterializationByPartition"]


CHECK_EXECUTIONS = """
query ($key: AssetKeyInput!, $check: String!) {
  assetCheckExecutions(assetKey: $key, checkName: $check, limit: 50) {
    runId timestamp partition
    evaluation { timestamp partition targetMaterialization { timestamp runId } }
  }
}"""


def check_executions(url: str, asset: str, check: str) -> list[dict]:
    return graphql(url, CHECK_EXECUTIONS, key={"path": [asset]}, check=check)["assetCheckExecutions"]


def assert_evaluations_follow_their_materializations(executions: list[dict], materializations: list[dict]) -> None:
    """Each day's evaluation was stored after the materialization it judged, which is that day's
    latest one. (The execution's own `timestamp`, which the check's Overview shows as Timestamp, is
    when Dagster planned it: at the run's creation, before any step ran; see docs/operations.md.)"""
    latest = {m["partition"]: m for m in materializations}
    judged: dict[str, dict] = {}  # each day's newest evaluation (the list is newest first)
    for e in executions:
        if e["evaluation"] is not None and e["partition"] in latest:
            judged.setdefault(e["partition"], e)
    assert sorted(judged) == sorted(latest)
    for execution in judged.values():
        evaluation, materialization = execution["evaluation"], latest[execution["partition"]]
        target = evaluation["targetMaterialization"]
        assert target is not None and target["runId"] == materialization["runId"]
        assert float(target["timestamp"]) == pytest.approx(float(materialization["timestamp"]) / 1000, abs=0.001)
        assert evaluation["timestamp"] >= target["timestamp"], execution
        assert execution["timestamp"] <= target["timestamp"]  # planned when the run was created


PARTITION_KEYS = """
query ($key: AssetKeyInput!) {
  assetNodeOrError(assetKey: $key) { ... on AssetNode { partitionKeysByDimension { partitionKeys } } }
}"""


def dialog_window(url: str, asset: str) -> list[str]:
    """The partitions the backfill dialog shows by default: the last 90 of the asset's."""
    data = graphql(url, PARTITION_KEYS, key={"path": [asset]})
    (dimension,) = data["assetNodeOrError"]["partitionKeysByDimension"]
    return dimension["partitionKeys"][-DIALOG_DAYS:]

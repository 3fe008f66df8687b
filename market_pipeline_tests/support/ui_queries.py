"""The GraphQL queries the Dagster UI's pages make: a check's Partitions tab, an asset's plots by
partition, a check's executions and the backfill dialog's default window."""

from __future__ import annotations

import datetime as dt

import pytest

from market_pipeline_tests.support.dagster_ui import graphql

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

"""`--remote`: the whole graph over two days with the lake on a loopback S3 bucket against the same on
local disk (issue 36: at most 1.5x the local wall), and the GetObjects of each step.

The bucket is moto's `ThreadedMotoServer` on 127.0.0.1 (a free port) in this process; the two runs are
`market-pipeline run` subprocesses (`graph.run_graph`) over the same generated days (`sources/` of the
bench's data dir, linked), each from an empty lake. The GET figures are the steps' own counts
(`mdp_lake_get_requests_total` and `mdp_lake_get_bytes_total` per stage, from the remote run's metrics
files), which count every request of the lake's boto3 client (core/lake/local_copies.py).
"""

from __future__ import annotations

import datetime as dt
import logging
import shutil
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from market_pipeline.bench.graph import GraphRun, run_graph
from market_pipeline.settings import PipelineSettings

REMOTE_DAYS = 2
GOAL_REMOTE_OVER_LOCAL = 1.5
_REGION = "us-east-1"
_PREFIX = "bench/lake"


@dataclass
class RemoteFigures:
    local: GraphRun
    remote: GraphRun
    gets: dict[str, tuple[int, int]]  # stage -> (GetObjects, bytes)
    # CPU the loopback server (this process's threads) used during the run on the bucket: taken from
    # the same two cores as the pipeline, which a real bucket's server would not take.
    server_cpu_seconds: float = 0.0

    @property
    def ratio(self) -> float:
        return self.remote.seconds / self.local.seconds if self.local.seconds else 0.0

    @property
    def met(self) -> bool:
        return remote_goal_met(self.local, self.remote)


def remote_goal_met(local: GraphRun, remote: GraphRun) -> bool:
    """Both runs succeeded and the bucket's wall is at most GOAL_REMOTE_OVER_LOCAL times the local one."""
    if local.exit_code or remote.exit_code or local.seconds <= 0:
        return False
    return remote.seconds <= GOAL_REMOTE_OVER_LOCAL * local.seconds


def gets_per_stage(points: Iterable[dict[str, object]]) -> dict[str, tuple[int, int]]:
    """stage -> (GetObjects, bytes) summed over metric points (`otlp_json.read_points`: delta sums)."""
    names = {"mdp_lake_get_requests_total": 0, "mdp_lake_get_bytes_total": 1}
    totals: dict[str, list[int]] = {}
    for point in points:
        which = names.get(str(point["name"]))
        if which is None:
            continue
        stage = str(point["attributes"]["stage"])  # type: ignore[index]
        totals.setdefault(stage, [0, 0])[which] += int(point["value"])  # type: ignore[call-overload]
    return {stage: (gets, size) for stage, (gets, size) in sorted(totals.items())}


def _fresh(run_dir: Path, shared_sources: Path) -> None:
    """`run_dir` without a lake, warehouse or metrics of an earlier bench, sharing the generated days."""
    for name in ("lake", "reports", "metrics", "tmp", "warehouse.duckdb"):
        path = run_dir / name
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    if not (run_dir / "sources").exists():
        (run_dir / "sources").symlink_to(shared_sources.resolve())


def measure_remote(
    settings: PipelineSettings,
    day: dt.date,
    say: Callable[[str], None],
    settings_for: Callable[[Path], PipelineSettings],
) -> RemoteFigures:
    """The whole graph over `day` and the next day, locally and on a loopback bucket (days generated first)."""
    import boto3
    from moto.server import ThreadedMotoServer

    from market_pipeline.core.telemetry.otlp_json import read_points

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # the server's line per request, not the report's
    end = day + dt.timedelta(days=REMOTE_DAYS - 1)
    base = settings.data_dir / "remote"
    local_settings, bucket_settings = settings_for(base / "local"), settings_for(base / "bucket")
    for run_dir in (local_settings.data_dir, bucket_settings.data_dir):
        _fresh(run_dir, settings.data_dir / "sources")
    local = run_graph(local_settings, day, end=end)
    if local.exit_code:
        say(f"the local two-day run exited {local.exit_code}; see {local.log}")
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        keys = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench-secret", "AWS_REGION": _REGION}
        bucket = f"bench-{uuid.uuid4().hex[:12]}"
        boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name=_REGION,
            aws_access_key_id=keys["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=keys["AWS_SECRET_ACCESS_KEY"],
        ).create_bucket(Bucket=bucket)
        env = {**keys, "AWS_ENDPOINT_URL": endpoint, "PIPELINE_LAKE_URL": f"s3://{bucket}/{_PREFIX}"}
        server_cpu = time.process_time()  # the run is a child process: this process's CPU is the server's
        remote = run_graph(bucket_settings, day, end=end, source_env=env)
        server_cpu = time.process_time() - server_cpu
    finally:
        server.stop()
    if remote.exit_code:
        say(f"the two-day run on the bucket exited {remote.exit_code}; see {remote.log}")
    metrics = bucket_settings.data_dir / "metrics"
    gets = gets_per_stage(read_points(metrics) if metrics.is_dir() else [])
    return RemoteFigures(local, remote, gets, server_cpu)


def remote_report(figures: RemoteFigures, say: Callable[[str], None]) -> dict[str, object]:
    """Print the remote figure; returns its JSON fields."""
    say(
        f"remote lake: the whole graph over {REMOTE_DAYS} days on a loopback S3 bucket {figures.remote.seconds:.2f} s "
        f"(exit {figures.remote.exit_code}) vs on local disk {figures.local.seconds:.2f} s "
        f"(exit {figures.local.exit_code}) = {figures.ratio:.2f}x -- goal <= {GOAL_REMOTE_OVER_LOCAL}x: "
        f"{'met' if figures.met else 'NOT met'}"
    )
    say("  lake objects fetched per step (GetObjects, MB):")
    for stage, (gets, size) in figures.gets.items():
        say(f"    {stage:44s} {gets:5d} {size / 1e6:9.1f}")
    say(
        f"  the loopback server itself used {figures.server_cpu_seconds:.2f} CPU s during the run on the bucket "
        "(on the same cores as the pipeline; a real bucket's server uses none of them)"
    )
    return {
        "remote_seconds": round(figures.remote.seconds, 3),
        "remote_local_seconds": round(figures.local.seconds, 3),
        "remote_over_local": round(figures.ratio, 3),
        "remote_exit_code": figures.remote.exit_code,
        "remote_server_cpu_seconds": round(figures.server_cpu_seconds, 3),
        "remote_gets": {stage: gets for stage, (gets, _) in figures.gets.items()},
        "remote_get_bytes": {stage: size for stage, (_, size) in figures.gets.items()},
    }

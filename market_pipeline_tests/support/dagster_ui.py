"""The Dagster UI for tests: a webserver process on a free 127.0.0.1 port, its GraphQL API, and
stopping it with every process it started (test_ui_graphql.py, test_ui.py)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

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

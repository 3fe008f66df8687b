"""`market-pipeline ui` (what `make ui` runs): one code server, and dagster-daemon and the Dagster
UI both served by it.

Given workspace.yaml's `python_module` entry, dagster-daemon and dagster-webserver each start a
code server of their own and keep it alive with heartbeats. dagster-daemon reloads its workspace
every 60 s (RELOAD_WORKSPACE_INTERVAL, dagster/_daemon/controller.py): it starts a new code server
and stops heartbeating the old one, which logs `dagster.code_server - WARNING - No heartbeat
received in 20 seconds, shutting down` and exits, once a minute even while idle, each new one
importing the code location again. Here one long-lived code server (`dagster code-server start`)
on a free 127.0.0.1 port serves both through a generated workspace (`grpc_server`): the daemon's
reload only reconnects, and the UI's "Reload" reloads the code inside that one server.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from market_pipeline.cli.common import EXIT_INTERRUPTED, CliError
from market_pipeline.cli.webserver import checked_ui_settings, webserver_argv

CODE_MODULE = "market_pipeline.definitions"
LOCATION = "market_pipeline"
STOP_TIMEOUT_S = 30  # per process, then it is killed
CODE_SERVER_START_TIMEOUT_S = 300  # it listens once the code location is loaded: slow on a busy machine


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def grpc_workspace(port: int) -> str:
    """A workspace whose one code location is the code server on 127.0.0.1:`port`."""
    return (
        "# Written by `market-pipeline ui`: the code location is the one code server it started.\n"
        f"load_from:\n  - grpc_server:\n      host: 127.0.0.1\n      port: {port}\n"
        f"      location_name: {LOCATION}\n"
    )


def code_server_argv(port: int, working_directory: Path) -> list[str]:
    return [
        *(sys.executable, "-m", "dagster", "code-server", "start"),
        *("-m", CODE_MODULE, "--location-name", LOCATION, "-d", str(working_directory)),
        *("-h", "127.0.0.1", "-p", str(port)),
    ]


def _wait_until_listening(process: subprocess.Popen, port: int) -> None:
    """Until the code server accepts connections (it opens its port after loading the code): a
    daemon or webserver started earlier would find no code location and log a gRPC error."""
    deadline = time.monotonic() + CODE_SERVER_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise CliError(f"the code server exited with {process.returncode} (its error is above)")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.5)
    raise CliError(f"the code server did not listen on 127.0.0.1:{port} within {CODE_SERVER_START_TIMEOUT_S} s")


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGINT)  # Dagster's processes shut down cleanly on an interrupt
        try:
            process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def ui_command() -> int:
    settings = checked_ui_settings()
    # Stop on SIGTERM (systemd, docker) as on Ctrl-C. Installed before the children start, so they
    # begin with Python's own SIGINT handling even where this process began with SIGINT ignored
    # (a background job): each then shuts down on the SIGINT _stop sends (the code server with its
    # child, instead of leaving it to time out on heartbeats).
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    port = _free_port()
    with tempfile.TemporaryDirectory(prefix="market_pipeline_ui.") as scratch:
        workspace = Path(scratch) / "workspace.yaml"
        workspace.write_text(grpc_workspace(port))
        daemon_bin = Path(sys.executable).with_name("dagster-daemon")
        if not daemon_bin.is_file():
            raise CliError(f"dagster-daemon is not installed next to {sys.executable}")
        print(f"starting the code server on 127.0.0.1:{port}, dagster-daemon and the Dagster UI", flush=True)
        started: dict[str, subprocess.Popen] = {}
        try:
            started["the code server"] = subprocess.Popen(code_server_argv(port, Path.cwd()))
            _wait_until_listening(started["the code server"], port)
            started["dagster-daemon"] = subprocess.Popen([str(daemon_bin), "run", "-w", str(workspace)])
            print(f"the Dagster UI: http://{settings.ui.host}:{settings.ui.port}", flush=True)
            webserver = started["the webserver"] = subprocess.Popen(webserver_argv(settings, workspace))
            while webserver.poll() is None:
                for name, process in started.items():
                    if process is not webserver and process.poll() is not None:
                        raise CliError(f"{name} exited with {process.returncode}; stopping the UI")
                time.sleep(1)
            return webserver.returncode
        except KeyboardInterrupt:
            return EXIT_INTERRUPTED
        finally:
            for process in reversed(started.values()):
                _stop(process)

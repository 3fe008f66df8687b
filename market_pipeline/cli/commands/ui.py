"""`market-pipeline webserver` and `market-pipeline ui`: the Dagster UI."""

from __future__ import annotations

import argparse
from pathlib import Path

from market_pipeline.cli.commands.options import Parents


def register(sub: argparse._SubParsersAction, parents: Parents) -> None:
    webserver = sub.add_parser(
        "webserver",
        parents=[parents.verbose],
        help="run the Dagster UI on PIPELINE_UI__HOST:PIPELINE_UI__PORT",
        description="Start dagster-webserver on the address of the settings (ui.host, ui.port). In the "
        "prod profile a host beyond loopback needs PIPELINE_UI__EXPOSED_REASON.",
    )
    webserver.add_argument(
        "-w", "--workspace", type=Path, default=Path("workspace.yaml"), help="Dagster workspace file"
    )
    webserver.set_defaults(handler=_webserver)
    ui = sub.add_parser(
        "ui",
        parents=[parents.verbose],
        help="run one code server, dagster-daemon and the Dagster UI on it (what `make ui` runs)",
        description="Start one Dagster code server for market_pipeline.definitions on a free 127.0.0.1 port, "
        "then dagster-daemon and the webserver (on ui.host:ui.port) both served by it; Ctrl-C stops all three.",
    )
    ui.set_defaults(handler=_ui)


def _webserver(args: argparse.Namespace) -> int:
    from market_pipeline.cli.webserver import webserver_command

    return webserver_command(args.workspace)


def _ui(args: argparse.Namespace) -> int:
    from market_pipeline.cli.ui import ui_command

    return ui_command()

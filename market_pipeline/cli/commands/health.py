"""`market-pipeline health` and `market-pipeline serve`."""

from __future__ import annotations

import argparse

from market_pipeline.cli.commands.options import Parents


def register(sub: argparse._SubParsersAction, parents: Parents) -> None:
    health = sub.add_parser(
        "health",
        parents=[parents.verbose],
        help="print a JSON health report; exit 1 when something needs attention",
        description="Report the last successful partition per asset, the latest check results, "
        "lake size, free disk and whether the warehouse is reachable, as one JSON object.",
    )
    health.set_defaults(handler=_health)
    serve = sub.add_parser(
        "serve",
        parents=[parents.verbose],
        help="serve GET /health (the health JSON; 200 or 503) and /metrics until stopped",
        description="A long-running HTTP endpoint for Docker HEALTHCHECKs and monitors: /health answers "
        "with the JSON of `market-pipeline health`, status 200 when nothing needs attention, else 503. "
        "It has no authentication: keep it on loopback or a private network.",
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=9464, help="port to listen on (default 9464)")
    serve.set_defaults(handler=_serve)


def _health(args: argparse.Namespace) -> int:
    from market_pipeline.cli.health import health_command

    return health_command()


def _serve(args: argparse.Namespace) -> int:
    from market_pipeline.cli.serve import serve_command

    return serve_command(args.host, args.port)

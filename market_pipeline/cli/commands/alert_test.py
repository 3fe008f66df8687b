"""`market-pipeline alert-test`."""

from __future__ import annotations

import argparse

from market_pipeline.cli.commands.options import Parents


def register(sub: argparse._SubParsersAction, parents: Parents) -> None:
    parser = sub.add_parser(
        "alert-test",
        parents=[parents.verbose],
        help="deliver one synthetic test alert through the configured webhook; print the delivery status",
        description="Send one alert of kind 'test' to PIPELINE_ALERT_WEBHOOK_URL (with the bearer token) and to "
        "alerts.jsonl, and print the webhook's answer. Exit 1 when the webhook did not accept it.",
    )
    parser.set_defaults(handler=_handle)


def _handle(args: argparse.Namespace) -> int:
    from market_pipeline.cli.alert_test import alert_test_command

    return alert_test_command()

"""`market-pipeline`: validate the environment, run a date range, or run the demo.

    market-pipeline validate-env
    market-pipeline run --start-date 2024-03-01 --end-date 2024-03-03 [--select raw_trades+ ...]
    market-pipeline demo [--days 3] [--start-date YYYY-MM-DD] [--data-dir DIR]
    market-pipeline verify-capture FILE ...
    market-pipeline health
    market-pipeline serve [--host 127.0.0.1] [--port 9464]
    market-pipeline capture --market spot --symbol btcusdt --duration 1h --out DIR
    market-pipeline encrypt FILE -o OUT
    market-pipeline decrypt FILE -o OUT
    market-pipeline backup --to DIR [--keep N] [--encrypt]
    market-pipeline restore FROM [--allow-nonempty-dagster-home]
    market-pipeline webserver [--workspace workspace.yaml]
    market-pipeline ui
    market-pipeline rotate-key [DIR ...]
    market-pipeline cleanup [--dry-run] [--older-than HOURS]
    market-pipeline alert-test
    market-pipeline export hftbacktest --instrument BINANCE:BTC-USDT --start 2024-03-01 --end 2024-03-01 --out DIR

Exit codes (one per kind of error, market_pipeline/core/errors.py; docs/operations.md "Exit codes"):
0 ok, 1 a step of the run failed, 2 bad arguments or environment, 3 configuration, 4 source,
5 input data, 6 integrity, 7 crypto, 8 capture, 9 blocked (gave up waiting for another run),
70 internal error (a bug), 130 interrupted. `--debug` adds the traceback to any error.
"""

from __future__ import annotations

import argparse
import logging
import sys
import traceback
from pathlib import Path
from typing import NoReturn

from market_pipeline.cli.commands import (
    alert_test,
    backup,
    capture,
    cleanup,
    crypto,
    demo,
    export,
    health,
    run,
    ui,
    validate_env,
    verify_capture,
)
from market_pipeline.cli.commands.options import build_parents
from market_pipeline.cli.common import EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, CliError, eprint
from market_pipeline.core.errors import PipelineError

# Each registers its subcommands, in the order `--help` lists them.
COMMANDS = (validate_env, run, demo, verify_capture, health, capture, ui, crypto, backup, alert_test, cleanup, export)


def _version() -> str:
    try:
        from importlib.metadata import version

        ours = version("market_pipeline")
    except Exception:  # running from a source tree that is not pip-installed
        ours = _source_tree_version()
    try:
        from importlib.metadata import version

        return f"market-pipeline {ours} (dagster {version('dagster')})"
    except Exception:
        return f"market-pipeline {ours}"


def _source_tree_version() -> str:
    import tomllib

    pyproject = Path(__file__).resolve().parents[2] / "pyproject.toml"
    try:
        return tomllib.loads(pyproject.read_text())["project"]["version"]
    except Exception:
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="market-pipeline",
        description="Local-first market-data lake: validate the environment, materialize date "
        "ranges through Dagster, or run the demo on synthetic data.",
    )
    parser.add_argument("--version", action="version", version=_version())
    parser.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help="show Dagster's logs (-v: INFO, -vv: DEBUG and full tracebacks)",
    )
    parser.add_argument("--debug", action="store_true", default=False, help="print the traceback of an error")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    parents = build_parents()
    for command in COMMANDS:
        command.register(sub, parents)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, usage errors: argparse has printed already
        return exc.code if isinstance(exc.code, int) else (EXIT_OK if exc.code is None else EXIT_USAGE)
    debug = bool(args.debug) or args.verbose >= 2
    from market_pipeline.core.security.hardening import harden_process
    from market_pipeline.settings import SettingsError

    harden_process()  # umask 077 and secret scrubbing before anything is written or logged
    _use_log_format()

    try:
        return args.handler(args)
    except SettingsError as exc:
        eprint(*(f"error: {problem}" for problem in exc.problems))
        _print_traceback(exc, debug)
        return exc.exit_code
    except CliError as exc:
        eprint(f"error: {exc.message}")
        _print_traceback(exc.__cause__ or exc, debug)
        return exc.exit_code
    except PipelineError as exc:  # the message names the setting, file or row; the kind gives the code
        eprint(f"error: {exc}")
        _print_traceback(exc, debug)
        return exc.exit_code
    except KeyboardInterrupt:
        eprint("interrupted")
        return EXIT_INTERRUPTED
    except Exception as exc:  # a bug: one line, the traceback only on request
        eprint(f"error: internal error: {type(exc).__name__}: {exc}")
        if debug:
            traceback.print_exception(exc, file=sys.stderr)
        else:
            eprint("  run the command again with --debug for the traceback, and report it")
        return EXIT_INTERNAL


def console() -> NoReturn:
    """The `market-pipeline` console script (and `python -m market_pipeline.cli[.main]`): `main`,
    then the process's exit, spared the collections of its whole heap."""
    from market_pipeline.cli.heap import exits_after_command, spare_exit_collections

    exits_after_command()
    code = main()
    spare_exit_collections()
    sys.exit(code)


def _use_log_format() -> None:
    """PIPELINE_LOG_FORMAT for this process's Python logging (invalid settings: left for the command to report)."""
    from market_pipeline.core.structured_logs import configure_console_logs
    from market_pipeline.settings import SettingsError, load_settings

    try:
        log_format = load_settings().log_format
    except SettingsError:
        return
    configure_console_logs(log_format)


def _print_traceback(exc: BaseException, debug: bool) -> None:
    """The traceback on stderr with --debug; always in the log at debug level (scrubbed like every record)."""
    if debug:
        traceback.print_exception(exc, file=sys.stderr)
    else:
        logging.getLogger("market_pipeline.cli").debug("the error's traceback", exc_info=exc)


if __name__ == "__main__":
    console()

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
    market-pipeline alert-test
    market-pipeline export hftbacktest --instrument BINANCE:BTC-USDT --start 2024-03-01 --end 2024-03-01 --out DIR

Exit codes (one per kind of error, market_pipeline/core/errors.py; docs/operations.md "Exit codes"):
0 ok, 1 a step of the run failed, 2 bad arguments or environment, 3 configuration, 4 source,
5 input data, 6 integrity, 7 crypto, 8 capture, 9 blocked (gave up waiting for another run),
70 internal error (a bug), 130 interrupted. `--debug` adds the traceback to any error.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
import sys
import textwrap
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from market_pipeline.cli.common import (
    EXIT_FAILED,
    EXIT_INTERNAL,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    WIDTH,
    CliError,
    eprint,
    parse_date,
)
from market_pipeline.core.errors import PipelineError

if TYPE_CHECKING:
    from market_pipeline.settings import PipelineSettings

DEMO_INSTRUMENTS = ("BINANCE:BTC-USDT", "BINANCE_FUTURES:BTC-USDT-PERP")
DEMO_DAYS = 3  # ending yesterday by default: the last complete days, which the UI's default windows show
# The demo's one injected fault, on its last day only: a clock-skew episode (received_time 2 to
# 5 s after origin_time for 1 to 10 minutes). The hourly p99 of that day fails the NON-blocking
# clock_skew check with WARN, so the run still completes and the alert sensors have a story.
# (The settings synthetic.faults.clock_skew_episodes and synthetic.faults.days, i.e.
# PIPELINE_SYNTHETIC__FAULTS__CLOCK_SKEW_EPISODES and PIPELINE_SYNTHETIC__FAULTS__DAYS.)
DEMO_FAULT_EPISODES = 1

# A Dagster instance for the demo when neither DAGSTER_HOME nor ./dagster_home/dagster.yaml exists.
MINIMAL_DAGSTER_YAML = """\
# Written by `market-pipeline demo`: a local Dagster instance kept next to the demo data.
# Run history, event logs and compute logs live under this directory ($DAGSTER_HOME).
storage:
  sqlite:
    base_dir:
      env: DAGSTER_HOME
telemetry:
  enabled: false
"""


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
    verbose = argparse.ArgumentParser(add_help=False)
    verbose.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=argparse.SUPPRESS,
        help="show Dagster's logs (-v: INFO, -vv: DEBUG and full tracebacks)",
    )
    verbose.add_argument(
        "--debug", action="store_true", default=argparse.SUPPRESS, help="print the traceback of an error"
    )
    shows_progress = argparse.ArgumentParser(add_help=False)
    shows_progress.add_argument(
        "--no-progress",
        dest="progress",
        action="store_false",
        help="no progress while the run executes (default: a live display on a terminal, plain lines otherwise)",
    )
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

    sub.add_parser(
        "validate-env",
        parents=[verbose],
        help="check the settings and directories; print a summary (secrets: set/not set only)",
        description="Load the settings (config.yaml, .env, PIPELINE_* variables) and check the "
        "directories they name. Exit 1 if anything is wrong.",
    )

    run = sub.add_parser(
        "run",
        parents=[verbose, shows_progress],
        help="materialize a date range (inclusive) as one Dagster run",
        description="Materialize the selected assets for every day from --start-date to "
        "--end-date (inclusive) as ONE run in the Dagster instance of $DAGSTER_HOME.",
    )
    run.add_argument("--start-date", required=True, metavar="YYYY-MM-DD", help="first day (UTC)")
    run.add_argument("--end-date", required=True, metavar="YYYY-MM-DD", help="last day (UTC), inclusive")
    run.add_argument(
        "--select",
        action="extend",
        nargs="+",
        metavar="SEL",
        help="Dagster asset selection, e.g. raw_book_deltas, group:raw, raw_trades+ (repeatable; default: every asset)",
    )

    demo = sub.add_parser(
        "demo",
        parents=[verbose, shows_progress],
        help="generate synthetic data and materialize the whole pipeline for a few days",
        description="Materialize every asset for a few days of synthetic data for "
        f"{' and '.join(DEMO_INSTRUMENTS)}, then show what was produced.",
    )
    demo.add_argument("--days", type=int, default=DEMO_DAYS, metavar="N", help=f"number of days (default {DEMO_DAYS})")
    demo.add_argument("--start-date", metavar="YYYY-MM-DD", help="first day (default: the days end yesterday, UTC)")
    demo.add_argument(
        "--data-dir",
        type=Path,
        metavar="DIR",
        help="where the lake and warehouse go (default: PIPELINE_DATA_DIR, else ./data)",
    )
    verify = sub.add_parser(
        "verify-capture",
        parents=[verbose],
        help="replay Binance or Kraken captures of one instrument exactly; print one JSON object",
        description="Replay the files (in time order) with their exchange's rules (from the file "
        "names: kraken_... Kraken's, others Binance's) and check every oracle: Binance's bookTickers "
        "whose update id matches an applied diff, Kraken's book checksums. Exit 0 only with no mismatch.",
    )
    verify.add_argument("files", nargs="+", type=Path, metavar="FILE")

    sub.add_parser(
        "health",
        parents=[verbose],
        help="print a JSON health report; exit 1 when something needs attention",
        description="Report the last successful partition per asset, the latest check results, "
        "lake size, free disk and whether the warehouse is reachable, as one JSON object.",
    )

    serve = sub.add_parser(
        "serve",
        parents=[verbose],
        help="serve GET /health (the health JSON; 200 or 503) and /metrics until stopped",
        description="A long-running HTTP endpoint for Docker HEALTHCHECKs and monitors: /health answers "
        "with the JSON of `market-pipeline health`, status 200 when nothing needs attention, else 503. "
        "It has no authentication: keep it on loopback or a private network.",
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=9464, help="port to listen on (default 9464)")

    capture = sub.add_parser(
        "capture",
        parents=[verbose],
        help="record a golden sample from the Binance WebSocket streams",
        description="Subscribe to depth diffs, bookTicker and trades, take the REST snapshot by "
        "the sync rules and write `<receive ns> <json>` lines, rotated hourly, with a SHA-256 manifest.",
    )
    capture.add_argument("--market", required=True, choices=("spot", "usdm", "coinm"))
    capture.add_argument("--symbol", required=True, help="exchange symbol, e.g. btcusdt")
    capture.add_argument("--duration", required=True, help="how long to record, e.g. 90s, 15m, 1h")
    capture.add_argument("--out", required=True, type=Path, metavar="DIR")
    capture.add_argument("--ws-url", help=argparse.SUPPRESS)  # tests: a local WebSocket server
    capture.add_argument("--rest-url", help=argparse.SUPPRESS)  # tests: a local REST server
    capture.add_argument("--allow-plaintext", action="store_true", help=argparse.SUPPRESS)  # tests only: ws://
    capture.add_argument(
        "--encrypt",
        action="store_true",
        help="encrypt the files with PIPELINE_MASTER_KEY (also when PIPELINE_CAPTURE_ENCRYPT is on)",
    )

    webserver = sub.add_parser(
        "webserver",
        parents=[verbose],
        help="run the Dagster UI on PIPELINE_UI__HOST:PIPELINE_UI__PORT",
        description="Start dagster-webserver on the address of the settings (ui.host, ui.port). In the "
        "prod profile a host beyond loopback needs PIPELINE_UI__EXPOSED_REASON.",
    )
    webserver.add_argument(
        "-w", "--workspace", type=Path, default=Path("workspace.yaml"), help="Dagster workspace file"
    )

    sub.add_parser(
        "ui",
        parents=[verbose],
        help="run one code server, dagster-daemon and the Dagster UI on it (what `make ui` runs)",
        description="Start one Dagster code server for market_pipeline.definitions on a free 127.0.0.1 port, "
        "then dagster-daemon and the webserver (on ui.host:ui.port) both served by it; Ctrl-C stops all three.",
    )

    for name, verb in (("encrypt", "encrypt"), ("decrypt", "decrypt")):
        crypt = sub.add_parser(
            name,
            parents=[verbose],
            help=f"{verb} a file with AES-256-GCM (key derived from PIPELINE_MASTER_KEY)",
            description=f"{verb.capitalize()} FILE into OUT; OUT is written only when the whole file authenticates.",
        )
        crypt.add_argument("file", type=Path, metavar="FILE")
        crypt.add_argument("-o", "--output", required=True, type=Path, metavar="OUT")

    backup = sub.add_parser(
        "backup",
        parents=[verbose],
        help="write a consistent snapshot of the warehouse, the Dagster instance, checkpoints, captures and audit",
        description="Write DIR/market_pipeline-<UTC time>/ with a SHA-256 manifest: the warehouse's tables, the "
        "instance's SQLite databases, end-of-day book checkpoints, captures, the audit trail and the alerts. "
        "Waits, saying so, while a run holds the warehouse.",
    )
    backup.add_argument("--to", required=True, type=Path, metavar="DIR", help="directory that holds the snapshots")
    backup.add_argument("--keep", type=_positive_int, metavar="N", help="then delete all but the newest N snapshots")
    backup.add_argument("--encrypt", action="store_true", help="encrypt every file with PIPELINE_MASTER_KEY")
    backup.add_argument(
        "--wait-timeout",
        type=float,
        default=3600.0,
        metavar="SECONDS",
        help="how long to wait for a run that holds the warehouse (default 3600; then exit 9)",
    )

    restore = sub.add_parser(
        "restore",
        parents=[verbose],
        help="verify a backup and restore it into an empty PIPELINE_DATA_DIR (and DAGSTER_HOME)",
        description="Check every file of FROM against its manifest, then restore into $PIPELINE_DATA_DIR, which "
        "must be empty, and the instance's databases into $DAGSTER_HOME, which must hold only dagster.yaml.",
    )
    restore.add_argument("snapshot", type=Path, metavar="FROM", help="a DIR/market_pipeline-<time> snapshot")
    restore.add_argument(
        "--allow-nonempty-dagster-home",
        action="store_true",
        help="restore the instance beside other files in DAGSTER_HOME (an existing file is still never replaced)",
    )

    rotate = sub.add_parser(
        "rotate-key",
        parents=[verbose],
        help="re-encrypt every encrypted file from PIPELINE_MASTER_KEY to PIPELINE_NEW_MASTER_KEY",
        description="Find every encrypted file under the directories (by its header), re-encrypt it with the "
        "key in PIPELINE_NEW_MASTER_KEY, verify it, and replace it atomically, one file at a time. Files already "
        "under the new key are skipped, so an interrupted rotation can be run again.",
    )
    rotate.add_argument(
        "dirs", nargs="*", type=Path, metavar="DIR", help="directories to rotate (default: PIPELINE_DATA_DIR)"
    )

    sub.add_parser(
        "alert-test",
        parents=[verbose],
        help="deliver one synthetic test alert through the configured webhook; print the delivery status",
        description="Send one alert of kind 'test' to PIPELINE_ALERT_WEBHOOK_URL (with the bearer token) and to "
        "alerts.jsonl, and print the webhook's answer. Exit 1 when the webhook did not accept it.",
    )

    export = sub.add_parser(
        "export",
        parents=[verbose],
        help="write instrument-days of the lake in a backtester's format (hftbacktest)",
        description="Write each day from --start to --end (inclusive) that passed its blocking checks as "
        "hftbacktest's numpy event file: the previous day's book at the start, depth updates, vendor snapshot "
        "repairs and trades, with exchange (origin_time) and local (received_time) timestamps.",
    )
    export.add_argument("format", choices=["hftbacktest"], help="the file format")
    export.add_argument("--instrument", required=True, metavar="EXCHANGE:SYMBOL")
    export.add_argument("--start", required=True, metavar="YYYY-MM-DD", help="first day (UTC)")
    export.add_argument("--end", required=True, metavar="YYYY-MM-DD", help="last day (UTC), inclusive")
    export.add_argument("--out", required=True, type=Path, metavar="DIR", help="directory for the files")
    export.add_argument("--include-failed", action="store_true", help="also days that failed a blocking check")
    return parser


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, usage errors: argparse has printed already
        return exc.code if isinstance(exc.code, int) else (EXIT_OK if exc.code is None else EXIT_USAGE)
    verbosity = args.verbose or 0
    debug = bool(args.debug) or verbosity >= 2
    from market_pipeline.core.security.hardening import harden_process
    from market_pipeline.settings import SettingsError

    harden_process()  # umask 077 and secret scrubbing before anything is written or logged
    _use_log_format()

    try:
        if args.command == "validate-env":
            from market_pipeline.cli.validate import validate_env

            return validate_env()
        if args.command == "run":
            return run_command(args.start_date, args.end_date, args.select, verbosity, args.progress)
        if args.command == "demo":
            return demo_command(args.days, args.start_date, args.data_dir, verbosity, args.progress)
        if args.command == "verify-capture":
            from market_pipeline.cli.verify_capture import verify_capture_command

            _hand_over_master_key(required=False)  # for .enc captures
            return verify_capture_command(args.files)
        if args.command == "health":
            from market_pipeline.cli.health import health_command

            return health_command()
        if args.command == "serve":
            from market_pipeline.cli.serve import serve_command

            return serve_command(args.host, args.port)
        if args.command == "capture":
            from market_pipeline.cli.capture import capture_command
            from market_pipeline.settings import load_settings

            # --encrypt, or PIPELINE_CAPTURE_ENCRYPT (on in the prod profile).
            encrypt = args.encrypt or load_settings().capture_encrypt
            if encrypt:
                _hand_over_master_key(required=True)
            return capture_command(args, encrypt)
        if args.command == "webserver":
            from market_pipeline.cli.webserver import webserver_command

            return webserver_command(args.workspace)
        if args.command == "ui":
            from market_pipeline.cli.ui import ui_command

            return ui_command()
        if args.command in ("encrypt", "decrypt"):
            from market_pipeline.cli.crypto import crypt_command

            _hand_over_master_key(required=True)
            return crypt_command(args.command, args.file, args.output)
        if args.command == "backup":
            from market_pipeline.cli.backup import backup_command

            if args.encrypt:
                _hand_over_master_key(required=True)
            return backup_command(args.to, args.keep, args.encrypt, args.wait_timeout)
        if args.command == "restore":
            from market_pipeline.cli.backup import restore_command

            _hand_over_master_key(required=False)  # for an encrypted backup
            return restore_command(args.snapshot, args.allow_nonempty_dagster_home)
        if args.command == "rotate-key":
            from market_pipeline.cli.rotate_key import rotate_key_command

            _hand_over_master_key(required=True)  # the current key, from .env too
            return rotate_key_command(args.dirs)
        if args.command == "export":
            from market_pipeline.cli.export import export_hftbacktest_command
            from market_pipeline.settings import load_settings

            _hand_over_master_key(required=False)  # for an encrypted lake
            start, end = parse_date(args.start, "--start"), parse_date(args.end, "--end")
            return export_hftbacktest_command(
                load_settings(), args.instrument, start, end, args.out, args.include_failed
            )
        if args.command == "alert-test":
            from market_pipeline.cli.alert_test import alert_test_command

            return alert_test_command()
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
    eprint(f"error: unknown command {args.command!r}")
    return EXIT_USAGE


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


def _hand_over_master_key(required: bool) -> None:
    """core never reads the settings: give it their master key (`.env` included) for this command.
    With `required` False, invalid settings are left for the command to meet, if it needs them."""
    from market_pipeline.core.security import crypto
    from market_pipeline.settings import SettingsError, load_settings

    try:
        secret = load_settings().master_key
    except SettingsError:
        if required:
            raise
        return
    crypto.use_master_key(secret.get_secret_value() if secret is not None else None)


def run_range(
    settings: PipelineSettings,
    start: dt.date,
    end: dt.date,
    selections: list[str] | None,
    verbosity: int,
    launched_by: str,
    show_progress: bool = True,
) -> int:
    """Build the definitions from `settings`, execute the range as one run, print the summary."""
    from market_pipeline.cli.execution import (
        execute_range,
        load_defs,
        quiet_dagster,
        require_dagster_home,
        resolve_selection,
    )
    from market_pipeline.cli.report import print_run_summary
    from market_pipeline.defs.common.resources import hand_over_keys

    if start > end:
        raise CliError(f"--start-date {start} is after --end-date {end}", EXIT_USAGE)
    if start < settings.start_date:
        raise CliError(
            f"--start-date {start} is before the first partition {settings.start_date} (PIPELINE_START_DATE)",
            EXIT_USAGE,
        )
    require_dagster_home()
    _require_writable_data_dir(settings)
    hand_over_keys(settings)  # this process creates and reads the lake views after the run
    _require_remote_dependencies(settings)
    quiet_dagster(verbosity)
    defs = load_defs(settings)
    keys = resolve_selection(defs, selections)
    names = ", ".join(key.to_user_string() for key in keys)
    print(f"materializing {len(keys)} asset(s) for {start}..{end} as one run in DAGSTER_HOME")
    print(textwrap.fill(names, width=WIDTH, initial_indent="  ", subsequent_indent="  "), flush=True)
    run = execute_range(
        defs,
        keys,
        start,
        end,
        verbosity=verbosity,
        launched_by=launched_by,
        wait_timeout_seconds=settings.cli.run_wait_timeout_seconds,
        show_progress=show_progress,
    )
    _ensure_lake_views(settings)  # a run that selected only Parquet steps leaves its views to be created
    print_run_summary(run, settings, verbosity)
    if run.success:
        return EXIT_OK
    kind = run.failure_kind()  # e.g. a source or input-data error in a step: that kind's code
    return kind.exit_code if kind is not None else EXIT_FAILED


def _require_writable_data_dir(settings: PipelineSettings) -> None:
    """Refuse to start a run into a data dir that is not a writable directory, naming the variable."""
    from market_pipeline.cli.validate import writable_dir_problem
    from market_pipeline.settings import SettingsError

    problem = writable_dir_problem(settings.data_dir)
    if problem:
        raise SettingsError(
            [f"PIPELINE_DATA_DIR: {problem}; point PIPELINE_DATA_DIR at a directory this user can write"]
        )


def _require_remote_dependencies(settings: PipelineSettings) -> None:
    """Refuse to start a run whose lake bucket (PIPELINE_LAKE_URL) or DuckLake catalog
    (PIPELINE_CATALOG_URL) cannot be used: one line naming the setting and what to check, and the
    configuration exit code, instead of a run whose every step fails the same way."""
    from market_pipeline.core.lake import storage, warehouse

    if settings.lake_url:
        storage.check_lake_store(settings.lake_dir)  # type: ignore[arg-type]  # a UPath with a lake URL
    if settings.warehouse.is_ducklake:
        warehouse.check_warehouse(settings.warehouse)


def _ensure_lake_views(settings: PipelineSettings) -> None:
    """Create the warehouse views over the lake that are still missing (they read hive globs, so
    once is enough); a warehouse another process is writing is left for the `lake_views` step."""
    import duckdb

    from market_pipeline.core.lake.catalog import BARS_VIEWS, LAKE_VIEWS, ensure_lake_views

    try:
        ensure_lake_views(settings.warehouse, settings.lake_dir, (*LAKE_VIEWS, *BARS_VIEWS))
    except duckdb.IOException as exc:  # locked by a concurrent writer
        print(f"  (views not created now: {exc})")


def run_command(start: str, end: str, selections: list[str] | None, verbosity: int, show_progress: bool) -> int:
    from market_pipeline.settings import load_settings

    first, last = parse_date(start, "--start-date"), parse_date(end, "--end-date")
    return run_range(load_settings(), first, last, selections, verbosity, "cli-run", show_progress)


@contextmanager
def _restored_environ(*names: str) -> Iterator[None]:
    """Environment overrides that last for this command only (main() may run in-process)."""
    saved = {name: os.environ.get(name) for name in names}
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _demo_dagster_home(data_dir: Path) -> tuple[Path, str]:
    """DAGSTER_HOME for the demo, and how it was chosen."""
    current = os.environ.get("DAGSTER_HOME", "").strip()
    if current:
        home = Path(current).resolve()
        home.mkdir(parents=True, exist_ok=True)
        return home, "from DAGSTER_HOME"
    project = Path.cwd() / "dagster_home"
    if (project / "dagster.yaml").is_file():
        return project.resolve(), "the project instance; DAGSTER_HOME was not set"
    home = data_dir / "dagster_home"
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.is_file():
        config.write_text(MINIMAL_DAGSTER_YAML)
    return home, "a demo instance in the data dir; DAGSTER_HOME was not set"


def demo_days(days: int, start_text: str | None) -> tuple[dt.date, dt.date]:
    """The demo's first and last day: from --start-date, else the `days` complete UTC days up to yesterday."""
    if days < 1:
        raise CliError(f"--days must be at least 1, got {days}", EXIT_USAGE)
    if start_text is None:
        end = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)
        return end - dt.timedelta(days=days - 1), end
    start = parse_date(start_text, "--start-date")
    return start, start + dt.timedelta(days=days - 1)


def demo_settings(start: dt.date, end: dt.date, data_dir_arg: Path | None) -> PipelineSettings:
    """The demo's settings: the environment's, with synthetic data for the demo instruments, the
    injected fault on the last day, partitions from `start` at the latest and an absolute data dir.
    A previous demo's saved synthetic settings in the data dir are deleted first (demo_command
    saves this demo's, so later commands generate the same days)."""
    from market_pipeline.settings import load_settings
    from market_pipeline.vendors.synthetic.saved_settings import saved_settings_path

    overrides: dict[str, object] = {
        "source": "synthetic",
        "instruments": list(DEMO_INSTRUMENTS),
        # Merged into the environment's synthetic settings (profile, scale...), not replacing them.
        "synthetic": {"faults": {"clock_skew_episodes": DEMO_FAULT_EPISODES, "days": [end.isoformat()]}},
    }
    if data_dir_arg is not None:
        overrides["data_dir"] = data_dir_arg
    settings = load_settings(**overrides)
    # A previous demo's saved fault days are replaced, not merged with this one's.
    saved_settings_path(settings.data_dir).unlink(missing_ok=True)
    settings = load_settings(**overrides)
    # The partitions start at PIPELINE_START_DATE: move it back so the demo days exist.
    start_date = min(settings.start_date, start)
    return load_settings(**{**overrides, "start_date": start_date, "data_dir": settings.data_dir.resolve()})


def demo_command(
    days: int, start_text: str | None, data_dir_arg: Path | None, verbosity: int, show_progress: bool = True
) -> int:
    from market_pipeline.vendors.synthetic.saved_settings import save_synthetic_settings

    start, end = demo_days(days, start_text)
    settings = demo_settings(start, end, data_dir_arg)
    data_dir = settings.data_dir
    _require_writable_data_dir(settings)
    data_dir.mkdir(parents=True, exist_ok=True)
    saved = save_synthetic_settings(data_dir, settings.synthetic)
    # The Dagster instance (run history), not the code location: that is built from `settings`.
    with _restored_environ("DAGSTER_HOME"):
        home, how = _demo_dagster_home(data_dir)
        os.environ["DAGSTER_HOME"] = str(home)

        print(f"market-pipeline demo: synthetic data for {', '.join(DEMO_INSTRUMENTS)}")
        print(f"  days          {start}..{end} ({days} day{'s' if days != 1 else ''})")
        print(f"  data dir      {data_dir}")
        print(f"  dagster home  {home} ({how})")
        print(f"  fault         {DEMO_FAULT_EPISODES} clock-skew episode on {end} (received_time 2-5 s late)")
        print(f"  settings      {saved} (later commands on this data dir generate the same days)")
        code = run_range(settings, start, end, None, verbosity, "cli-demo", show_progress)
        from market_pipeline.cli.report import print_demo_alerts

        print_demo_alerts(settings, start, end, "cli-demo")
        warehouse = settings.warehouse
        if code == EXIT_OK:
            print()
            print("Next")
            print(f"  browse the run:  make ui DAGSTER_HOME={home} PIPELINE_DATA_DIR={data_dir}")
            print(f"  what failed:     DAGSTER_HOME={home} PIPELINE_DATA_DIR={data_dir} market-pipeline health")
            print("  query the lake from Python (read-only):")
            if warehouse.is_ducklake:  # the catalog's libpq string holds what connects (password left out)
                print("    from market_pipeline.core.lake import warehouse")
                print("    from market_pipeline.settings import load_settings")
                print("    con = warehouse.connect(load_settings().warehouse, read_only=True)")
            else:
                print("    import duckdb")
                print(f'    con = duckdb.connect("{warehouse.path.resolve()}", read_only=True)')
            print('    con.sql("SELECT exchange, symbol, dt, count(*) FROM raw.trades GROUP BY ALL").show()')
        return code


if __name__ == "__main__":
    sys.exit(main())

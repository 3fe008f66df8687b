"""`market-pipeline validate-env`: is this environment ready to run the pipeline?

Secrets (webhook token, master key, AWS keys) are reported only as set / not set.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from urllib.parse import urlsplit

from market_pipeline.cli.common import EXIT_FAILED, EXIT_OK, eprint, format_table
from market_pipeline.cli.insecure_settings import STRICT_PROFILE, insecure_settings
from market_pipeline.settings import (
    CONFIG_FILE_ENV,
    DEFAULT_CONFIG_FILE,
    PipelineSettings,
    SettingsError,
    load_settings,
)
from market_pipeline.vendors.registry import get_vendor


def writable_dir_problem(path: Path) -> str | None:
    """Why `path` cannot be used as a directory we write into (None when it can)."""
    path = path.resolve()
    if path.exists():
        if not path.is_dir():
            return f"{path} exists and is not a directory"
        refused = _write_refused(path)
        return f"{path} is not writable ({refused})" if refused else None
    parent = path.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        return f"cannot create {path}: {parent} is not a directory"
    refused = _write_refused(parent)
    return f"cannot create {path}: {parent} is not writable ({refused})" if refused else None


def _write_refused(directory: Path) -> str | None:
    """Why a file cannot be created in `directory`, by trying: `os.access` says yes to root on
    read-only mounts and pseudo file systems."""
    try:
        with tempfile.TemporaryFile(dir=directory):
            return None
    except OSError as exc:
        return exc.strerror or type(exc).__name__


def _set(value: object) -> str:
    return "set" if value else "not set"


def _url_host(url: str | None) -> str:
    # Webhook URLs often carry a secret in their path or query: show scheme and host only.
    if not url:
        return "not set"
    parts = urlsplit(url)
    return f"set ({parts.scheme}://{parts.hostname or '?'}/...)"


def environment_problems(settings: PipelineSettings) -> tuple[list[str], list[str]]:
    """(errors, warnings) about the environment around valid settings."""
    errors: list[str] = []
    warnings: list[str] = []
    problem = writable_dir_problem(settings.data_dir)
    if problem:
        errors.append(f"PIPELINE_DATA_DIR: {problem}")
    errors += get_vendor(settings.source).environment(settings)
    for name in sorted(settings.reference_sources - {settings.source}):
        errors += [f"PIPELINE_SOURCES reference {name}: {p}" for p in get_vendor(name).environment(settings)]
    home = os.environ.get("DAGSTER_HOME", "").strip()
    if not home:
        warnings.append(
            "DAGSTER_HOME is not set: `market-pipeline run` refuses to start and other Dagster "
            "processes would use a throwaway instance (export DAGSTER_HOME=$PWD/dagster_home)"
        )
    elif not Path(home).is_absolute():
        errors.append(f"DAGSTER_HOME: {home} is not an absolute path")
    elif not Path(home).is_dir():
        errors.append(f"DAGSTER_HOME: {home} is not an existing directory")
    # The prod profile refuses insecure settings; the others only warn about them.
    (errors if settings.env == STRICT_PROFILE else warnings).extend(insecure_settings(settings))
    return errors, warnings


def describe(settings: PipelineSettings) -> list[str]:
    """A short, secret-free summary of the effective settings."""
    config_file = Path(os.environ.get(CONFIG_FILE_ENV) or DEFAULT_CONFIG_FILE)
    dotenv = Path(".env")
    data_dir = settings.data_dir.resolve()
    lines = [f"  config file     {config_file}" + (f" + {dotenv.resolve()}" if dotenv.is_file() else "")]
    lines.append(f"  profile         {settings.env} (PIPELINE_ENV)")
    source = settings.source
    summary = get_vendor(settings.source).describe(settings)
    if summary:
        source += f" ({summary})"
    lines.append(f"  source          {source}")
    for key, pair in sorted(settings.sources.items()):
        lines.append(f"    {key}: primary {pair.primary}, reference {pair.reference or 'none'}")
    exists = "" if data_dir.exists() else " (will be created)"
    lines.append(f"  data dir        {data_dir}{exists}")
    lines.append(f"  warehouse       {settings.warehouse.describe()}")
    lines.append(f"  start date      {settings.start_date}")
    lines.append(f"  instruments     {len(settings.universe)}")
    table = [[i.key, str(i.tick_size), str(i.lot_size), i.spec.sequence] for i in settings.universe]
    lines += format_table(["instrument", "tick", "lot", "sequence"], table, indent=4)
    lines.append(f"  book            depth {settings.book.depth}, sample every {settings.book.sample_interval_ms} ms")
    lines.append(
        f"  alert webhook   url {_url_host(settings.alert_webhook_url)}, token {_set(settings.alert_webhook_token)}"
    )
    lines.append(f"  master key      {_set(settings.master_key)}")
    lines.append(f"  capture         {'encrypted' if settings.capture_encrypt else 'not encrypted'}")
    lines.append(f"  UI              {settings.ui.host}:{settings.ui.port}")
    lines.append(f"  log format      {settings.log_format}")
    home = os.environ.get("DAGSTER_HOME", "").strip()
    if home:
        yaml_note = "with dagster.yaml" if (Path(home) / "dagster.yaml").is_file() else "no dagster.yaml: defaults"
        lines.append(f"  DAGSTER_HOME    {home} ({yaml_note})")
    else:
        lines.append("  DAGSTER_HOME    not set")
    return lines


def validate_env() -> int:
    try:
        settings = load_settings()
    except SettingsError as exc:
        eprint(*(f"error: {problem}" for problem in exc.problems))
        return EXIT_FAILED
    errors, warnings = environment_problems(settings)
    print("configuration: " + ("PROBLEMS FOUND" if errors else "ok"))
    for line in describe(settings):
        print(line)
    eprint(*(f"warning: {w}" for w in warnings))
    eprint(*(f"error: {e}" for e in errors))
    return EXIT_FAILED if errors else EXIT_OK

"""`market-pipeline demo`: synthetic days of the demo instruments through the whole graph, with one
injected fault, in a Dagster instance of its own unless DAGSTER_HOME names one."""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from market_pipeline.cli.common import EXIT_OK, EXIT_USAGE, CliError, parse_date
from market_pipeline.cli.demo_defaults import DEMO_INSTRUMENTS
from market_pipeline.cli.run import require_writable_data_dir, run_range
from market_pipeline.settings import PipelineSettings

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
    require_writable_data_dir(settings)
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

"""Environment profiles (PIPELINE_ENV): config.yaml base < its profile block < .env < environment,
and the insecure settings `validate-env` refuses in prod (and only warns about elsewhere)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from market_pipeline.cli.main import main
from market_pipeline.settings import SettingsError, load_settings

CONFIG = """\
partition_tolerance_minutes: 1
instruments: [BINANCE:BTC-USDT, BINANCE_FUTURES:BTC-USDT-PERP]
book:
  depth: 20
  sample_interval_ms: 100
profiles:
  dev: {}
  staging:
    partition_tolerance_minutes: 2
    instruments: [BINANCE:ETH-USDT]
    book:
      depth: 5
  prod:
    partition_tolerance_minutes: 9
"""


@pytest.fixture
def config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(CONFIG)
    monkeypatch.setenv("PIPELINE_CONFIG_FILE", str(path))
    # The files alone say what book.* is here: the tests' cadence variable would beat them.
    monkeypatch.delenv("PIPELINE_BOOK__SAMPLE_INTERVAL_MS")
    return path


def _dotenv(cwd: Path, **values: str) -> None:
    (cwd / ".env").write_text("".join(f"{k}={v}\n" for k, v in values.items()))


def _problems(**overrides: object) -> list[str]:
    with pytest.raises(SettingsError) as info:
        load_settings(**overrides)
    return info.value.problems


# ---------------------------------------------------------------------------------------
# Overlay and precedence
# ---------------------------------------------------------------------------------------


def test_dev_is_the_default_and_keeps_the_base(config: Path):
    s = load_settings()
    assert (s.env, s.partition_tolerance_minutes, s.book.depth) == ("dev", 1, 20)


def test_profile_overlays_the_base_key_by_key(config: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("PIPELINE_ENV", "staging")
    s = load_settings()
    assert s.env == "staging"
    assert s.partition_tolerance_minutes == 2
    assert (s.book.depth, s.book.sample_interval_ms) == (5, 100)  # nested: merged, sibling from the base
    assert s.instruments == ["BINANCE:ETH-USDT"]  # lists are replaced, not appended


def test_dotenv_beats_the_profile_and_environment_beats_dotenv(
    config: Path, monkeypatch: pytest.MonkeyPatch, _hermetic_env: Path
):
    monkeypatch.setenv("PIPELINE_ENV", "staging")
    _dotenv(_hermetic_env, PIPELINE_PARTITION_TOLERANCE_MINUTES="3", PIPELINE_BOOK__DEPTH="7")
    s = load_settings()
    assert (s.partition_tolerance_minutes, s.book.depth) == (3, 7)
    monkeypatch.setenv("PIPELINE_PARTITION_TOLERANCE_MINUTES", "4")
    s = load_settings()
    assert (s.partition_tolerance_minutes, s.book.depth) == (4, 7)
    assert load_settings(partition_tolerance_minutes=5).partition_tolerance_minutes == 5  # explicit wins


def test_profile_named_in_dotenv_or_explicitly(config: Path, monkeypatch: pytest.MonkeyPatch, _hermetic_env: Path):
    _dotenv(_hermetic_env, PIPELINE_ENV="prod")
    assert load_settings().partition_tolerance_minutes == 9
    monkeypatch.setenv("PIPELINE_ENV", "staging")  # the environment beats .env for the choice too
    assert load_settings().partition_tolerance_minutes == 2
    assert load_settings(env="dev").partition_tolerance_minutes == 1


def test_config_file_may_name_its_own_profile(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    path = tmp_path / "prod.yaml"
    path.write_text("env: prod\nprofiles:\n  prod:\n    partition_tolerance_minutes: 9\n")
    monkeypatch.setenv("PIPELINE_CONFIG_FILE", str(path))
    s = load_settings()
    assert (s.env, s.partition_tolerance_minutes) == ("prod", 9)


def test_unknown_profile_names_pipeline_env(config: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("PIPELINE_ENV", "qa")
    (problem,) = _problems()
    assert problem.startswith("PIPELINE_ENV: unknown profile 'qa'")
    assert "dev, staging, prod" in problem


def test_unknown_profile_block_names_the_config_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    path = tmp_path / "config.yaml"
    path.write_text("profiles:\n  production:\n    workers: 2\n")
    monkeypatch.setenv("PIPELINE_CONFIG_FILE", str(path))
    (problem,) = _problems()
    assert str(path) in problem and "production" in problem


def test_committed_profiles():
    dev, staging, prod = (load_settings(env=name) for name in ("dev", "staging", "prod"))
    assert (dev.log_format, dev.capture_encrypt, dev.schedule.default_status) == ("text", False, "stopped")
    assert (staging.log_format, staging.capture_encrypt, staging.schedule.default_status) == ("json", False, "running")
    assert (prod.log_format, prod.capture_encrypt, prod.schedule.default_status) == ("json", True, "running")
    assert (prod.ui.host, prod.ui.port) == ("127.0.0.1", 3000)


# ---------------------------------------------------------------------------------------
# validate-env: prod refuses insecure settings, other profiles warn
# ---------------------------------------------------------------------------------------


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    home = tmp_path / "dagster_home"
    home.mkdir()
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("PIPELINE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("PIPELINE_MASTER_KEY", "a-master-key-for-the-prod-profile")  # prod encrypts captures


INSECURE = {
    "PIPELINE_ALERT_WEBHOOK_URL": ({"PIPELINE_ALERT_WEBHOOK_URL": "http://hooks.example.com/T0/secret-path"}, None),
    "PIPELINE_CAPTURE_ENCRYPT": ({"PIPELINE_CAPTURE_ENCRYPT": "true"}, "PIPELINE_MASTER_KEY"),
    "PIPELINE_UI__HOST": ({"PIPELINE_UI__HOST": "0.0.0.0"}, None),
    "PIPELINE_METRICS__PROMETHEUS_HOST": (
        {"PIPELINE_METRICS__PROMETHEUS_HOST": "0.0.0.0", "PIPELINE_METRICS__PROMETHEUS_PORT": "9464"},
        None,
    ),
}


def _validate(capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str], list[str]]:
    code = main(["validate-env"])
    err = capsys.readouterr().err.splitlines()
    errors = [line.removeprefix("error: ") for line in err if line.startswith("error: ")]
    warnings = [line.removeprefix("warning: ") for line in err if line.startswith("warning: ")]
    return code, errors, warnings


def test_prod_is_clean_with_the_committed_defaults_and_a_master_key(env, monkeypatch, capsys):
    monkeypatch.setenv("PIPELINE_ENV", "prod")
    code, errors, warnings = _validate(capsys)
    assert (code, errors, warnings) == (0, [], [])


@pytest.mark.parametrize("variable", list(INSECURE))
def test_prod_refuses_each_insecure_setting_by_name(env, monkeypatch, capsys, variable):
    values, unset = INSECURE[variable]
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    if unset:
        monkeypatch.delenv(unset)
    monkeypatch.setenv("PIPELINE_ENV", "prod")
    code, errors, _ = _validate(capsys)
    assert code == 1
    assert [e.split(maxsplit=1)[0].split("=")[0].rstrip(":") for e in errors] == [variable]
    assert "secret-path" not in errors[0]  # the webhook's path may be its secret

    monkeypatch.setenv("PIPELINE_ENV", "staging")  # the same setting is only a warning elsewhere
    code, errors, warnings = _validate(capsys)
    assert (code, errors) == (0, [])
    assert [w.split(maxsplit=1)[0].split("=")[0].rstrip(":") for w in warnings] == [variable]


@pytest.mark.parametrize(
    "values",
    [
        {"PIPELINE_ALERT_WEBHOOK_URL": "https://hooks.example.com/T0"},
        {"PIPELINE_ALERT_WEBHOOK_URL": "http://127.0.0.1:8080/hook"},  # plain http on loopback
        {"PIPELINE_UI__HOST": "0.0.0.0", "PIPELINE_UI__EXPOSED_REASON": "behind an authenticating proxy"},
        {"PIPELINE_UI__HOST": "::1"},
        {"PIPELINE_METRICS__PROMETHEUS_HOST": "0.0.0.0"},  # no port: /metrics is off
        {
            "PIPELINE_METRICS__PROMETHEUS_HOST": "10.0.0.5",
            "PIPELINE_METRICS__PROMETHEUS_PORT": "9464",
            "PIPELINE_METRICS__PROMETHEUS_EXPOSED_REASON": "scraped by the monitoring VLAN",
        },
    ],
)
def test_prod_accepts_secure_or_explained_settings(env, monkeypatch, capsys, values):
    monkeypatch.setenv("PIPELINE_ENV", "prod")
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    assert _validate(capsys) == (0, [], [])


def test_validate_env_shows_the_profile(env, monkeypatch, capsys):
    monkeypatch.setenv("PIPELINE_ENV", "staging")
    assert main(["validate-env"]) == 0
    out = capsys.readouterr().out
    assert "profile         staging (PIPELINE_ENV)" in out
    assert "log format      json" in out


# ---------------------------------------------------------------------------------------
# The commands that act on the same settings
# ---------------------------------------------------------------------------------------


@pytest.mark.nothing_starts("os.execv is stubbed: no webserver starts")
def test_webserver_binds_the_ui_address_of_the_settings(env, monkeypatch, tmp_path, capsys):
    workspace = tmp_path / "workspace.yaml"
    workspace.write_text("load_from: []\n")
    started: list[list[str]] = []
    monkeypatch.setattr("os.execv", lambda path, argv: started.append(argv))
    monkeypatch.setenv("PIPELINE_UI__PORT", "3111")
    main(["webserver", "-w", str(workspace)])
    (argv,) = started
    assert argv[1:] == ["-m", "dagster_webserver", "-h", "127.0.0.1", "-p", "3111", "-w", str(workspace)]


@pytest.mark.nothing_starts("os.execv is stubbed: no webserver starts")
def test_webserver_refuses_an_unexplained_exposed_ui_in_prod(env, monkeypatch, tmp_path, capsys):
    workspace = tmp_path / "workspace.yaml"
    workspace.write_text("load_from: []\n")
    started: list[list[str]] = []
    monkeypatch.setattr("os.execv", lambda path, argv: started.append(argv))
    monkeypatch.setenv("PIPELINE_ENV", "prod")
    monkeypatch.setenv("PIPELINE_UI__HOST", "0.0.0.0")
    assert main(["webserver", "-w", str(workspace)]) == 3  # configuration
    assert started == []
    assert "PIPELINE_UI__EXPOSED_REASON" in capsys.readouterr().err

    monkeypatch.setenv("PIPELINE_ENV", "dev")  # elsewhere: a warning, and the UI starts
    main(["webserver", "-w", str(workspace)])
    assert started[0][started[0].index("-h") + 1] == "0.0.0.0"
    assert "warning: PIPELINE_UI__HOST=0.0.0.0" in capsys.readouterr().err


def test_capture_encrypt_setting_needs_the_master_key(env, monkeypatch, tmp_path, capsys):
    """PIPELINE_CAPTURE_ENCRYPT (on in prod) encrypts like --encrypt: no key, no capture."""
    monkeypatch.delenv("PIPELINE_MASTER_KEY")
    monkeypatch.setenv("PIPELINE_ENV", "prod")
    argv = textwrap.dedent(f"""
        capture --market spot --symbol btcusdt --duration 1s --out {tmp_path / "out"} --allow-plaintext
        --ws-url ws://127.0.0.1:9 --rest-url http://127.0.0.1:9
    """).split()
    assert main(argv) == 2
    assert "PIPELINE_MASTER_KEY" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()  # refused before anything was written

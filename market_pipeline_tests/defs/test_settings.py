"""Pipeline settings: config.yaml < .env (cwd) < environment; validation errors name the variable."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path

import pytest

from market_pipeline.settings import DEFAULT_CONFIG_FILE, PipelineSettings, SettingsError, load_settings


def write_dotenv(cwd: Path, **values: str) -> Path:
    path = cwd / ".env"
    path.write_text("".join(f"{k}={v}\n" for k, v in values.items()), encoding="utf-8")
    return path


def settings_error(**overrides: object) -> SettingsError:
    with pytest.raises(SettingsError) as info:
        load_settings(**overrides)
    return info.value


# ---------------------------------------------------------------------------------------
# Defaults and precedence
# ---------------------------------------------------------------------------------------


def test_defaults_come_from_config_yaml():
    s = load_settings()
    assert s.source == "synthetic"
    assert s.data_dir == Path("./data")
    assert s.start_date == dt.date(2024, 1, 1)
    assert s.instruments == ["BINANCE:BTC-USDT", "BINANCE_FUTURES:BTC-USDT-PERP"]
    assert s.partition_tolerance_minutes == 60
    assert s.synthetic.profile == "small"
    assert s.synthetic.seed == 20240101
    assert s.book.depth == 20
    assert s.lake_dir == Path("./data") / "lake"
    assert s.warehouse_path == Path("./data") / "warehouse.duckdb"


def test_dotenv_overrides_config_yaml(_hermetic_env: Path):
    write_dotenv(
        _hermetic_env,
        PIPELINE_DATA_DIR="/from/dotenv",
        PIPELINE_START_DATE="2024-02-01",
        PIPELINE_SYNTHETIC__SEED="7",
    )
    s = load_settings()
    assert s.data_dir == Path("/from/dotenv")
    assert s.start_date == dt.date(2024, 2, 1)
    assert s.synthetic.seed == 7
    assert s.synthetic.profile == "small"  # the rest of the nested group still from config.yaml


def test_environment_overrides_dotenv(_hermetic_env: Path, monkeypatch: pytest.MonkeyPatch):
    write_dotenv(_hermetic_env, PIPELINE_DATA_DIR="/from/dotenv", PIPELINE_PARTITION_TOLERANCE_MINUTES="5")
    monkeypatch.setenv("PIPELINE_DATA_DIR", "/from/env")
    s = load_settings()
    assert s.data_dir == Path("/from/env")
    assert s.partition_tolerance_minutes == 5  # only in .env: .env still beats config.yaml


def test_explicit_override_beats_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setenv("PIPELINE_DATA_DIR", "/from/env")
    assert load_settings(data_dir=tmp_path).data_dir == tmp_path


def test_config_file_variable_replaces_config_yaml(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    other = tmp_path / "other.yaml"
    other.write_text(
        "source: local\n"
        "local_dir: /srv/vendor\n"
        "start_date: '2023-06-01'\n"
        "instruments: [BINANCE:ETH-USDT]\n"
        "instrument_specs:\n"
        "  BINANCE:ETH-USDT: {tick_size: '0.05', lot_size: '0.0001', sequence: contiguous}\n"
        "synthetic: {profile: realistic}\n"
    )
    monkeypatch.setenv("PIPELINE_CONFIG_FILE", str(other))
    s = load_settings()
    assert s.source == "local"
    assert s.local_dir == Path("/srv/vendor")
    assert s.start_date == dt.date(2023, 6, 1)
    assert s.instruments == ["BINANCE:ETH-USDT"]
    assert s.synthetic.profile == "realistic"
    (eth,) = s.universe
    assert (eth.tick_size, eth.lot_size, eth.spec.sequence) == (Decimal("0.05"), Decimal("0.0001"), "contiguous")
    # The environment still wins over the alternative file.
    monkeypatch.setenv("PIPELINE_START_DATE", "2023-07-01")
    assert load_settings().start_date == dt.date(2023, 7, 1)


def test_config_file_variable_is_not_read_from_dotenv(_hermetic_env: Path, tmp_path: Path):
    other = tmp_path / "other.yaml"
    other.write_text("start_date: '2023-06-01'\n")
    write_dotenv(_hermetic_env, PIPELINE_CONFIG_FILE=str(other))
    assert load_settings().start_date == dt.date(2024, 1, 1)


def test_missing_config_file_names_the_variable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setenv("PIPELINE_CONFIG_FILE", str(tmp_path / "nope.yaml"))
    err = settings_error()
    assert "PIPELINE_CONFIG_FILE" in str(err)
    assert "nope.yaml" in str(err)


def test_nested_variable(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("PIPELINE_SYNTHETIC__PROFILE", "realistic")
    monkeypatch.setenv("PIPELINE_SYNTHETIC__FAULTS__DROPPED_MESSAGES", "3")
    monkeypatch.setenv("PIPELINE_SYNTHETIC__FAULTS__DAYS", '["2024-01-02"]')
    s = load_settings()
    assert s.synthetic.profile == "realistic"
    assert s.synthetic.seed == 20240101  # untouched sibling from config.yaml
    assert s.synthetic.faults.dropped_messages == 3
    assert s.synthetic.faults.days == [dt.date(2024, 1, 2)]
    assert s.synthetic.faults.applies_to(dt.date(2024, 1, 2))
    assert not s.synthetic.faults.applies_to(dt.date(2024, 1, 3))


def test_instruments_comma_list(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("PIPELINE_INSTRUMENTS", "BINANCE:BTC-USDT, BINANCE:ETH-USDT ,BINANCE_FUTURES:BTC-USDT-PERP")
    s = load_settings()
    assert s.instruments == ["BINANCE:BTC-USDT", "BINANCE:ETH-USDT", "BINANCE_FUTURES:BTC-USDT-PERP"]
    assert [(i.exchange, i.symbol) for i in s.universe] == [
        ("BINANCE", "BTC-USDT"),
        ("BINANCE", "ETH-USDT"),
        ("BINANCE_FUTURES", "BTC-USDT-PERP"),
    ]
    assert [i.key for i in s.universe] == s.instruments


def test_instruments_comma_list_from_dotenv(_hermetic_env: Path):
    write_dotenv(_hermetic_env, PIPELINE_INSTRUMENTS="BINANCE:ETH-USDT,BINANCE:SOL-USDT")
    assert load_settings().instruments == ["BINANCE:ETH-USDT", "BINANCE:SOL-USDT"]


def test_instrument_tick_and_lot_from_config_and_default(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("PIPELINE_INSTRUMENTS", "BINANCE:BTC-USDT,BINANCE_FUTURES:BTC-USDT-PERP,BINANCE:ETH-USDT")
    btc, perp, eth = load_settings().universe
    assert (btc.tick_size, btc.lot_size) == (Decimal("0.01"), Decimal("0.000001"))
    assert (perp.tick_size, perp.lot_size) == (Decimal("0.1"), Decimal("0.001"))
    # Not in instrument_specs: default_instrument.
    assert (eth.tick_size, eth.lot_size) == (Decimal("0.01"), Decimal("0.00001"))
    # Exact decimals, not float noise from the YAML.
    assert str(perp.tick_size) == "0.1" and str(perp.lot_size) == "0.001"
    assert btc.spec.sequence == "monotonic"


def test_default_instrument_nested_variables(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("PIPELINE_INSTRUMENTS", "BINANCE:ETH-USDT")
    monkeypatch.setenv("PIPELINE_DEFAULT_INSTRUMENT__TICK_SIZE", "0.001")
    (eth,) = load_settings().universe
    assert eth.tick_size == Decimal("0.001")
    assert eth.lot_size == Decimal("0.00001")  # sibling kept from config.yaml


def test_instrument_specs_variable_merges_over_config(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv(
        "PIPELINE_INSTRUMENT_SPECS",
        '{"BINANCE:ETH-USDT": {"tick_size": "0.01", "lot_size": "0.0001", "sequence": "contiguous"}}',
    )
    monkeypatch.setenv("PIPELINE_INSTRUMENTS", "BINANCE:ETH-USDT,BINANCE_FUTURES:BTC-USDT-PERP")
    eth, perp = load_settings().universe
    assert (eth.tick_size, eth.lot_size, eth.spec.sequence) == (Decimal("0.01"), Decimal("0.0001"), "contiguous")
    assert perp.tick_size == Decimal("0.1")  # config.yaml entry still there


def test_s3_settings_have_one_spelling(monkeypatch: pytest.MonkeyPatch):
    """Only the nested PIPELINE_S3__* names exist; the flat PIPELINE_S3_BUCKET (removed) is named, not ignored."""
    monkeypatch.setenv("PIPELINE_S3__BUCKET", "nested-bucket")
    monkeypatch.setenv("PIPELINE_S3__REGION", "us-east-1")
    s3 = load_settings().s3
    assert s3.bucket == "nested-bucket"
    assert s3.region == "us-east-1"
    assert s3.prefix == "market-data/cryptofeed"
    monkeypatch.setenv("PIPELINE_S3_BUCKET", "flat-bucket")
    assert settings_error().problems == [
        "PIPELINE_S3_BUCKET: no such setting, it would be ignored; did you mean PIPELINE_S3__BUCKET? "
        "(docs/configuration.md lists them)"
    ]


@pytest.mark.parametrize(
    ("variable", "closest"),
    [
        ("PIPELINE_SYNTHETIC__SCALEE", "PIPELINE_SYNTHETIC__SCALE"),
        ("PIPELINE_DATADIR", "PIPELINE_DATA_DIR"),
        ("pipeline_book__sample_interval", "PIPELINE_BOOK__SAMPLE_INTERVAL_MS"),
        ("PIPELINE_SYNTHETIC__FAULTS__CLOCK_SKEW_EPISODE", "PIPELINE_SYNTHETIC__FAULTS__CLOCK_SKEW_EPISODES"),
    ],
)
def test_a_misspelled_variable_is_named_with_the_closest_setting(monkeypatch, variable: str, closest: str):
    monkeypatch.setenv(variable, "1")
    monkeypatch.setenv("PIPELINE_SOURCE", "ftp")  # reported together with the other problems
    problems = settings_error().problems
    assert problems[0].startswith("PIPELINE_SOURCE:")
    assert problems[1:] == [
        f"{variable.upper()}: no such setting, it would be ignored; did you mean {closest}? "
        "(docs/configuration.md lists them)"
    ]


def test_every_setting_name_and_the_other_variables_are_accepted(monkeypatch: pytest.MonkeyPatch, _hermetic_env):
    from market_pipeline.settings import OTHER_VARIABLES, unknown_variables, variable_names

    names, open_prefixes = variable_names()
    assert {"PIPELINE_S3__BUCKET", "PIPELINE_SYNTHETIC__FAULTS__DAYS", "PIPELINE_UI__PORT"} <= names
    assert open_prefixes == {"PIPELINE_INSTRUMENT_SPECS__", "PIPELINE_TARDIS_EXCHANGES__", "PIPELINE_TARDIS_SYMBOLS__"}
    assert unknown_variables([*names, *OTHER_VARIABLES, "PIPELINE_INSTRUMENT_SPECS__X__TICK_SIZE", "HOME"]) == []
    write_dotenv(_hermetic_env, PIPELINE_WORKER="2")  # .env is read too
    assert [p.split(":")[0] for p in settings_error().problems] == ["PIPELINE_WORKER"]


# ---------------------------------------------------------------------------------------
# Validation errors name the variable
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("PIPELINE_SOURCE", "ftp"),
        ("PIPELINE_START_DATE", "2024-13-45"),
        ("PIPELINE_START_DATE", "yesterday"),
        ("PIPELINE_INSTRUMENTS", "BTCUSDT"),
        ("PIPELINE_INSTRUMENTS", "BINANCE:BTC-USDT,BINANCE:BTC-USDT"),
        ("PIPELINE_INSTRUMENTS", "BINANCE:BTC/USDT"),
        ("PIPELINE_INSTRUMENTS", ","),
        # A truncated JSON list once passed and created lake folders named `exchange=["BINANCE`.
        ("PIPELINE_INSTRUMENTS", '["BINANCE:BTC-USDT"'),
        ("PIPELINE_INSTRUMENTS", "binance:BTC-USDT"),
        ("PIPELINE_INSTRUMENTS", "BINANCE:BTC USDT"),
        ("PIPELINE_INSTRUMENTS", "BINANCE:../etc"),
        ("PIPELINE_INSTRUMENT_SPECS", '{"BINANCE:BTC/USDT": {"tick_size": "0.01", "lot_size": "0.001"}}'),
        ("PIPELINE_ALERT_WEBHOOK_URL", "ftp://hooks.example.com/x"),
        ("PIPELINE_ALERT_WEBHOOK_URL", "hooks.example.com/x"),
        ("PIPELINE_S3__ENDPOINT_URL", "127.0.0.1:9000"),
        ("PIPELINE_PARTITION_TOLERANCE_MINUTES", "-1"),
        ("PIPELINE_SYNTHETIC__PROFILE", "huge"),
        ("PIPELINE_BOOK__DEPTH", "0"),
        # A 1 ms fidelity grid would hold 86.4 M grid times a day in memory.
        ("PIPELINE_CHECKS__FIDELITY_SAMPLE_INTERVAL_MS", "1"),
    ],
)
def test_invalid_variable_is_named(monkeypatch: pytest.MonkeyPatch, variable: str, value: str):
    monkeypatch.setenv(variable, value)
    err = settings_error()
    assert any(p.startswith(f"{variable}:") for p in err.problems), err.problems
    assert variable in str(err)


def test_invalid_variable_in_dotenv_is_named(_hermetic_env: Path):
    write_dotenv(_hermetic_env, PIPELINE_SOURCE="nope")
    err = settings_error()
    assert any(p.startswith("PIPELINE_SOURCE:") for p in err.problems), err.problems


def test_every_problem_is_reported(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("PIPELINE_SOURCE", "ftp")
    monkeypatch.setenv("PIPELINE_START_DATE", "never")
    err = settings_error()
    names = {p.split(":", 1)[0] for p in err.problems}
    assert {"PIPELINE_SOURCE", "PIPELINE_START_DATE"} <= names


def test_local_source_needs_local_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setenv("PIPELINE_SOURCE", "local")
    err = settings_error()
    assert "PIPELINE_LOCAL_DIR" in str(err)
    assert "PIPELINE_SOURCE" in str(err)
    monkeypatch.setenv("PIPELINE_LOCAL_DIR", str(tmp_path))
    assert load_settings().local_dir == tmp_path


def test_capture_source_needs_capture_dir(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("PIPELINE_SOURCE", "capture")
    assert "PIPELINE_CAPTURE_DIR" in str(settings_error())


@pytest.mark.parametrize("tick", ["-0.01", "0", "abc", "NaN"])
def test_bad_tick_size_in_custom_config_names_the_spec(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tick: str):
    other = tmp_path / "bad.yaml"
    other.write_text(f"instrument_specs:\n  BINANCE:BTC-USDT: {{tick_size: '{tick}', lot_size: '0.00001'}}\n")
    monkeypatch.setenv("PIPELINE_CONFIG_FILE", str(other))
    err = settings_error()
    assert any(p.startswith("PIPELINE_INSTRUMENT_SPECS") and "TICK_SIZE" in p for p in err.problems), err.problems


def test_unknown_instrument_spec_key_is_rejected(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    other = tmp_path / "bad.yaml"
    other.write_text("instrument_specs:\n  BINANCE:BTC-USDT: {tick_size: '0.01', lot_size: '0.1', tick: 1}\n")
    monkeypatch.setenv("PIPELINE_CONFIG_FILE", str(other))
    err = settings_error()
    assert any(p.startswith("PIPELINE_INSTRUMENT_SPECS") for p in err.problems), err.problems


def test_malformed_json_variable_is_named(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("PIPELINE_INSTRUMENT_SPECS", "{not json")
    err = settings_error()
    assert any(p.startswith("PIPELINE_INSTRUMENT_SPECS") for p in err.problems)


# ---------------------------------------------------------------------------------------
# Secrets
# ---------------------------------------------------------------------------------------

SECRET = "s3cr3t-Token-9f2e7d"
MASTER = "m4ster-Key-31c8aa"


def test_secrets_not_in_str_or_repr(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("PIPELINE_ALERT_WEBHOOK_TOKEN", SECRET)
    monkeypatch.setenv("PIPELINE_MASTER_KEY", MASTER)
    s = load_settings()
    assert s.alert_webhook_token is not None and s.alert_webhook_token.get_secret_value() == SECRET
    assert s.master_key is not None and s.master_key.get_secret_value() == MASTER
    for text in (str(s), repr(s), s.model_dump_json(), str(s.model_dump())):
        assert SECRET not in text
        assert MASTER not in text


def test_the_catalog_url_is_a_secret_shown_only_without_its_password(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
):
    from market_pipeline.cli.main import main

    url = f"ducklake:postgres:host=127.0.0.1 port=5432 dbname=catalog user=market password={SECRET}"
    monkeypatch.setenv("PIPELINE_CATALOG_URL", url)
    monkeypatch.setenv("PIPELINE_DATA_DIR", str(tmp_path))
    s = load_settings()
    assert s.catalog_url is not None and s.catalog_url.get_secret_value() == url
    assert s.warehouse.catalog == url.removeprefix("ducklake:postgres:")  # what connects keeps it
    for text in (str(s), repr(s), s.model_dump_json(), str(s.model_dump()), s.warehouse.describe()):
        assert SECRET not in text
    assert "password=***" in s.warehouse.describe()
    main(["validate-env"])
    out = capsys.readouterr()
    assert "password=***" in out.out and SECRET not in out.out + out.err

    monkeypatch.setenv("PIPELINE_CATALOG_URL", f"postgresql://market:{SECRET}@127.0.0.1/catalog")
    err = settings_error()
    assert any(p.startswith("PIPELINE_CATALOG_URL") for p in err.problems) and SECRET not in str(err)


def test_secrets_from_dotenv_not_in_repr(_hermetic_env: Path):
    write_dotenv(_hermetic_env, PIPELINE_MASTER_KEY=MASTER)
    s = load_settings()
    assert s.master_key is not None and s.master_key.get_secret_value() == MASTER
    assert MASTER not in repr(s) and MASTER not in str(s)


def test_secrets_not_in_settings_error(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("PIPELINE_ALERT_WEBHOOK_TOKEN", SECRET)
    monkeypatch.setenv("PIPELINE_MASTER_KEY", MASTER)
    monkeypatch.setenv("PIPELINE_SOURCE", "local")  # invalid: no PIPELINE_LOCAL_DIR
    monkeypatch.setenv("PIPELINE_START_DATE", "not-a-date")
    err = settings_error()
    text = "\n".join([str(err), repr(err), *err.problems])
    assert SECRET not in text and MASTER not in text
    assert err.__cause__ is None and err.__suppress_context__  # pydantic's error (with inputs) is not chained


def test_invalid_secret_value_is_not_echoed(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    # A secret of the wrong type in a config file: the error names the setting, never the value.
    other = tmp_path / "bad.yaml"
    other.write_text("master_key: [9931777, 4242]\n")
    monkeypatch.setenv("PIPELINE_CONFIG_FILE", str(other))
    err = settings_error()
    assert any(p.startswith("PIPELINE_MASTER_KEY:") for p in err.problems), err.problems
    assert "9931777" not in str(err)


def test_settings_class_reads_prefixed_names_only(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("SOURCE", "local")
    monkeypatch.setenv("DATA_DIR", "/elsewhere")
    s = PipelineSettings()
    assert s.source == "synthetic"
    assert s.data_dir == Path("./data")
    assert DEFAULT_CONFIG_FILE.is_file()


def test_instruments_accept_a_json_list(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("PIPELINE_INSTRUMENTS", '["BINANCE:BTC-USDT", "BINANCE_FUTURES:BTC-USDT-PERP"]')
    assert [i.key for i in load_settings().universe] == ["BINANCE:BTC-USDT", "BINANCE_FUTURES:BTC-USDT-PERP"]

"""PIPELINE_LOG_FORMAT=json: one JSON object per line with time, level, component, run id, asset,
partition and instrument (null when not applicable), through the same secret scrubbing as text."""

from __future__ import annotations

import datetime as dt
import io
import json
import logging

import dagster as dg
import pytest

from market_pipeline.cli.main import main
from market_pipeline.core.security.scrub import install_log_scrubbing
from market_pipeline.core.structured_logs import configure_console_logs, json_handler
from market_pipeline.defs.automation.schedules import build_daily_pipeline_job
from market_pipeline.defs.common.json_logs import json_console_logger, run_logger_config, run_loggers, stage_log_fields
from market_pipeline.settings import SettingsError, load_settings

FIELDS = ["time", "level", "component", "run_id", "asset", "partition", "instrument", "message"]
MASTER_KEY = "planted-master-key-0123456789"
TOKEN = "planted.bearer.token.abcdef"


@pytest.fixture
def planted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIPELINE_MASTER_KEY", MASTER_KEY)  # scrubbed as a literal from the environment
    install_log_scrubbing()


def _json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def _logger_to(stream: io.StringIO, name: str) -> logging.Logger:
    log = logging.Logger(name, logging.DEBUG)  # unattached: nothing propagates to the test's root logger
    log.addHandler(json_handler(stream))
    return log


def test_a_line_has_every_field_and_null_where_not_applicable():
    stream = io.StringIO()
    _logger_to(stream, "market_pipeline.core.lake.files").warning("disk %s full", "/data")
    (line,) = _json_lines(stream.getvalue())
    assert list(line) == FIELDS
    assert line["level"] == "WARNING" and line["component"] == "market_pipeline.core.lake.files"
    assert line["message"] == "disk /data full"
    assert [line[k] for k in ("run_id", "asset", "partition", "instrument")] == [None] * 4
    assert dt.datetime.fromisoformat(line["time"]).utcoffset() == dt.timedelta(0)


def test_context_fields_from_extra_and_secrets_scrubbed(planted):
    stream = io.StringIO()
    log = _logger_to(stream, "market_pipeline.test")
    fields = stage_log_fields(dg.AssetKey("raw_trades"), dt.date(2024, 3, 1), "BINANCE:BTC-USDT")
    log.info(f"key={MASTER_KEY} Authorization: Bearer {TOKEN}", extra={**fields, "detail": {"token": "abc123xyz"}})
    try:
        raise ValueError(f"cannot open s3://user:{MASTER_KEY}@bucket/x")
    except ValueError:
        log.exception("failed")
    text = stream.getvalue()
    assert MASTER_KEY not in text and TOKEN not in text and "abc123xyz" not in text
    first, second = _json_lines(text)
    assert (first["asset"], first["partition"], first["instrument"]) == ("raw_trades", "2024-03-01", "BINANCE:BTC-USDT")
    assert first["message"] == "key=*** Authorization: Bearer ***"
    assert first["detail"] == {"token": "***"}  # other extras are printed, scrubbed too
    assert "ValueError" in second["exc_info"] and "s3://***@bucket" in second["exc_info"]


def test_dagster_run_lines_carry_run_asset_partition_and_instrument(planted, capsys):
    partitions = dg.DailyPartitionsDefinition(start_date="2024-03-01")

    @dg.asset(partitions_def=partitions)
    def raw_trades(context) -> None:
        day = context.partition_key
        context.log.info(f"imported {day} with key={MASTER_KEY}", extra=stage_log_fields(context.asset_key, day, "X:Y"))
        context.log.info("no instrument here")

    @dg.asset(partitions_def=partitions)
    def raw_book(context) -> None:
        raise ValueError(f"vendor refused key={MASTER_KEY}")

    # The daily job as the code location builds it: its default run config selects the JSON logger,
    # so a run the schedule or sensor starts (no run config of its own) logs JSON lines.
    daily_job = build_daily_pipeline_job(dg.AssetSelection.checks(), run_logger_config("json"))
    defs = dg.Definitions(assets=[raw_trades, raw_book], jobs=[daily_job], loggers=run_loggers("json"))
    job = defs.resolve_job_def(daily_job.name)
    with dg.DagsterInstance.ephemeral() as instance:
        result = job.execute_in_process(instance=instance, partition_key="2024-03-02", raise_on_error=False)
    assert not result.success  # raw_book failed; raw_trades succeeded
    err = capsys.readouterr().err
    assert MASTER_KEY not in err
    lines = _json_lines(err)
    assert lines and all(list(line)[: len(FIELDS)] == FIELDS for line in lines)
    by_message = {line["message"]: line for line in lines}
    imported = by_message["imported 2024-03-02 with key=***"]
    assert (imported["run_id"], imported["asset"], imported["partition"], imported["instrument"]) == (
        result.run_id,
        "raw_trades",
        "2024-03-02",
        "X:Y",
    )
    plain = by_message["no instrument here"]
    assert (plain["run_id"], plain["asset"], plain["partition"], plain["instrument"]) == (
        result.run_id,
        None,
        "2024-03-02",  # the run's partition
        None,
    )
    assert all(line["component"] == "dagster" for line in lines)
    errors = [line["exc_info"] for line in lines if line["level"] == "ERROR" and "exc_info" in line]
    assert any("ValueError: vendor refused key=***" in error for error in errors)  # the step's error, scrubbed


def test_process_logging_follows_the_setting(capsys):
    try:
        configure_console_logs("json")
        logging.getLogger("market_pipeline.core.telemetry").warning("exporter down")
        (line,) = _json_lines(capsys.readouterr().err)
        assert (line["component"], line["message"]) == ("market_pipeline.core.telemetry", "exporter down")
    finally:
        configure_console_logs("text")
    logging.getLogger("market_pipeline.core.telemetry").warning("exporter down")
    assert _json_lines(capsys.readouterr().err) == []  # text again: Python's last-resort handler


def test_log_format_setting(monkeypatch: pytest.MonkeyPatch):
    assert load_settings().log_format == "text"  # the default, on a terminal or not
    assert run_loggers("text") == {}  # Dagster's colored console logger
    monkeypatch.setenv("PIPELINE_LOG_FORMAT", "json")
    assert run_loggers(load_settings().log_format) == {"console": json_console_logger}
    monkeypatch.setenv("PIPELINE_LOG_FORMAT", "yaml")
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert info.value.problems[0].startswith("PIPELINE_LOG_FORMAT:")


@pytest.mark.slow  # a whole CLI run over two days (~8 s on an idle machine)
def test_cli_run_logs_json_lines(local_source, monkeypatch, capsys):
    monkeypatch.setenv("PIPELINE_LOG_FORMAT", "json")
    try:
        code = main(
            ["-v", "run", "--start-date", "2024-03-01", "--end-date", "2024-03-02", "--select", "raw_book_deltas"]
        )
    finally:
        configure_console_logs("text")
    out, err = capsys.readouterr()
    assert code == 0, err
    lines = _json_lines(err)
    imports = [line for line in lines if line["instrument"] == "BINANCE:BTC-USDT"]
    assert [(line["asset"], line["partition"]) for line in imports] == [
        ("raw_book_deltas", "2024-03-01"),
        ("raw_book_deltas", "2024-03-02"),
    ]
    assert len({line["run_id"] for line in imports}) == 1 and imports[0]["run_id"] in out
    assert "run " in out  # the command's own report stays text on stdout

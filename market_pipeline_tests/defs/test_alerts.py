"""Alerts: failed check evaluations and failed runs -> alerts.jsonl and a webhook, once each.

The checks here are the test's own (a tiny daily asset with a WARN and an ERROR check), so these
tests do not depend on the quality checks of the pipeline.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import dagster as dg
import pytest
import urllib3.util.retry

from market_pipeline.core.alerts import delivery
from market_pipeline.core.alerts.model import CHECK_FAILED, RUN_FAILED
from market_pipeline.core.alerts.webhook import post_json
from market_pipeline.defs.alerts.sensors import alert_delivery, build_alert_sensors
from market_pipeline.settings import load_settings
from market_pipeline_tests.support.webhook import Receiver

failed_check_alerts, failed_run_alerts = build_alert_sensors(interval_seconds=30)

TOKEN = "tok-PLANTED-3f9c2a7e51"
DAY = "2024-03-02"


# ---------------------------------------------------------------------------------------
# A webhook receiver on loopback
# ---------------------------------------------------------------------------------------


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as r:
        yield r


@pytest.fixture
def alert_env(monkeypatch: pytest.MonkeyPatch, data_dir: Path) -> Path:
    """Token set, fast retries; the caller sets the webhook URL."""
    monkeypatch.setenv("PIPELINE_ALERT_WEBHOOK_TOKEN", TOKEN)
    monkeypatch.setenv("PIPELINE_ALERTS__WEBHOOK_BACKOFF_SECONDS", "0.01")
    monkeypatch.setenv("PIPELINE_ALERTS__WEBSERVER_URL", "http://dagster.example:3000/")
    return data_dir / "alerts" / "alerts.jsonl"


@pytest.fixture
def sent_metrics(monkeypatch: pytest.MonkeyPatch) -> list[tuple]:
    calls: list[tuple] = []
    monkeypatch.setattr(delivery.telemetry, "count", lambda name, value=1, **attrs: calls.append((name, value, attrs)))
    return calls


# ---------------------------------------------------------------------------------------
# A tiny asset with failing checks of its own
# ---------------------------------------------------------------------------------------

partitions = dg.DailyPartitionsDefinition(start_date="2024-03-01", timezone="UTC")


@dg.asset(partitions_def=partitions)
def tiny() -> dg.MaterializeResult:
    return dg.MaterializeResult(metadata={"rows": 3})


@dg.asset_check(asset=tiny, blocking=False)
def tiny_skew() -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        passed=False,
        severity=dg.AssetCheckSeverity.WARN,
        description="p99 clock skew 2,345 ms above 500 ms",
        metadata={
            "p99_skew_ms": 2345.5,
            "rows_checked": 1000,
            "worst_rows": dg.MetadataValue.table(
                records=[
                    dg.TableRecord({"received_time": "2024-03-02T10:00:00Z", "sequence_number": 42, "skew_ms": 4100.0})
                ]
            ),
        },
    )


@dg.asset_check(asset=tiny, blocking=True)
def tiny_grid() -> dg.AssetCheckResult:
    return dg.AssetCheckResult(passed=False, severity=dg.AssetCheckSeverity.ERROR, metadata={"off_grid": 7})


@dg.asset_check(asset=tiny)
def tiny_rows() -> dg.AssetCheckResult:
    return dg.AssetCheckResult(passed=True, metadata={"rows": 3})


@dg.asset
def broken() -> None:
    raise ValueError("vendor file truncated: /lake/x.parquet")


def materialize_tiny(instance: dg.DagsterInstance, day: str = DAY) -> str:
    result = dg.materialize(
        [tiny, tiny_skew, tiny_grid, tiny_rows], instance=instance, partition_key=day, raise_on_error=False
    )
    assert not result.success  # the blocking ERROR check fails the run (the run-failure sensor's part)
    return result.run_id


def tick(instance: dg.DagsterInstance, data_dir: Path, cursor: str | None = None) -> dg.SensorResult:
    context = dg.build_sensor_context(
        instance=instance, cursor=cursor, resources={"pipeline": load_settings(data_dir=data_dir)}
    )
    return failed_check_alerts(context)


def read_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def assert_token_nowhere(*roots: Path, texts: tuple[str, ...] = ()) -> None:
    for root in roots:
        for path in root.rglob("*"):
            if path.is_file():
                assert TOKEN.encode() not in path.read_bytes(), f"token found in {path}"
    for text in texts:
        assert TOKEN not in text


# ---------------------------------------------------------------------------------------
# Tests
# ---------------------------------------------------------------------------------------


def test_failed_checks_alert_once_to_jsonl_and_webhook(
    monkeypatch: pytest.MonkeyPatch,
    instance: dg.DagsterInstance,
    dagster_home: Path,
    data_dir: Path,
    alert_env: Path,
    receiver: Receiver,
    sent_metrics: list[tuple],
    capfd: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("PIPELINE_ALERT_WEBHOOK_URL", receiver.url)
    run_id = materialize_tiny(instance)

    first = tick(instance, data_dir)
    lines = read_lines(alert_env)
    assert sorted((line["check"], line["severity"], line["blocking"]) for line in lines) == [
        ("tiny_grid", "ERROR", True),
        ("tiny_skew", "WARN", False),
    ]
    skew = next(line for line in lines if line["check"] == "tiny_skew")
    assert skew["kind"] == CHECK_FAILED
    assert skew["asset"] == "tiny"
    assert skew["partitions"] == [DAY]
    assert skew["run_id"] == run_id
    assert skew["run_url"] == f"http://dagster.example:3000/runs/{run_id}"
    assert skew["description"] == "p99 clock skew 2,345 ms above 500 ms"
    assert skew["figures"]["p99_skew_ms"] == 2345.5
    assert skew["figures"]["rows_checked"] == 1000
    assert skew["figures"]["worst_rows"] == [
        {"received_time": "2024-03-02T10:00:00Z", "sequence_number": 42, "skew_ms": 4100.0}
    ]
    assert skew["delivery"]["webhook"] == {
        "status": "delivered",
        "attempts": 1,
        "http_status": 200,
        "error": None,
        "target": receiver.url.rsplit("/hooks", 1)[0],
    }

    # The webhook got the same two alerts (without the delivery record), token in the header only.
    payloads = receiver.payloads()
    assert sorted(p["key"] for p in payloads) == sorted(line["key"] for line in lines)
    by_key = {p["key"]: p for p in payloads}
    for line in lines:
        expected = {k: v for k, v in line.items() if k not in ("delivery", "logged_at")}
        assert by_key[line["key"]] == expected
    for request in receiver.requests:
        assert request["headers"]["Authorization"] == f"Bearer {TOKEN}"
        assert request["headers"]["Content-Type"] == "application/json"
        assert request["headers"]["Idempotency-Key"] == json.loads(request["body"])["key"]
    assert sorted(
        (name, value, attrs["channel"], attrs["severity"], attrs["outcome"]) for name, value, attrs in sent_metrics
    ) == [
        ("mdp_alerts_sent_total", 1, "jsonl", "ERROR", "delivered"),
        ("mdp_alerts_sent_total", 1, "jsonl", "WARN", "delivered"),
        ("mdp_alerts_sent_total", 1, "webhook", "ERROR", "delivered"),
        ("mdp_alerts_sent_total", 1, "webhook", "WARN", "delivered"),
    ]

    # Next tick with the cursor: nothing new. A reset cursor (restarted sensor): still nothing.
    again = tick(instance, data_dir, first.cursor)
    reset = tick(instance, data_dir, None)
    assert len(read_lines(alert_env)) == 2 and len(receiver.requests) == 2
    assert again.skip_reason.skip_message.startswith("0 new alert(s)")
    assert reset.skip_reason.skip_message.startswith("0 new alert(s)")

    # A later run with the same failures is a new evaluation: two new alerts, read after the cursor.
    second_run = materialize_tiny(instance, "2024-03-03")
    tick(instance, data_dir, again.cursor)
    lines = read_lines(alert_env)
    assert len(lines) == 4 and len(receiver.requests) == 4
    assert {line["run_id"] for line in lines[2:]} == {second_run}
    assert {tuple(line["partitions"]) for line in lines[2:]} == {("2024-03-03",)}

    out, err = capfd.readouterr()
    assert "alert WARN check tiny_skew on tiny [2024-03-02] -> alerts.jsonl; webhook delivered" in err
    assert_token_nowhere(dagster_home, data_dir, texts=(out, err, *(r["body"].decode() for r in receiver.requests)))


def test_run_failure_alert(
    instance: dg.DagsterInstance,
    data_dir: Path,
    alert_env: Path,
    receiver: Receiver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PIPELINE_ALERT_WEBHOOK_URL", receiver.url)
    result = dg.materialize([broken], instance=instance, raise_on_error=False)
    assert not result.success
    run = instance.get_run_by_id(result.run_id)
    context = dg.build_run_status_sensor_context(
        sensor_name="failed_run_alerts",
        dagster_event=result.get_run_failure_event(),
        dagster_instance=instance,
        dagster_run=run,
        resources={"pipeline": load_settings(data_dir=data_dir)},
    ).for_run_failure()
    failed_run_alerts(context)
    failed_run_alerts(context)  # the same failure seen twice: one alert

    (line,) = read_lines(alert_env)
    assert line["kind"] == RUN_FAILED
    assert line["severity"] == "ERROR"
    assert line["key"] == f"run:{result.run_id}"
    assert line["asset"] == "broken"
    assert line["run_url"] == f"http://dagster.example:3000/runs/{result.run_id}"
    (step,) = line["figures"]["failed_steps"]
    assert step["step"] == "broken"
    assert "vendor file truncated: /lake/x.parquet" in step["error"]
    assert line["delivery"]["webhook"]["status"] == "delivered"
    assert [p["key"] for p in receiver.payloads()] == [line["key"]]


@pytest.fixture
def retry_sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The waits urllib3's Retry asks for between attempts, recorded instead of slept."""
    waits: list[float] = []
    monkeypatch.setattr(urllib3.util.retry, "time", SimpleNamespace(sleep=waits.append, time=time.time))
    return waits


def test_post_json_backs_off_with_jitter_and_gives_up_after_the_retries(retry_sleeps: list[float]) -> None:
    with Receiver(fail_first=10) as down:
        result = post_json(down.url, b"{}", TOKEN, timeout=2, retries=3, backoff=0.5, idempotency_key="k")
    # urllib3's backoff: the first retry at once, then 2x and 4x the factor, each plus up to 0.5 s of jitter.
    first, second = retry_sleeps
    assert 1.0 <= first < 1.5 and 2.0 <= second < 2.5
    assert (result.status, result.attempts, result.http_status) == ("failed", 4, 503)
    assert result.error == "HTTP 503 Service Unavailable"
    assert len(down.requests) == 4
    assert TOKEN not in repr(result)


@pytest.mark.parametrize(("retry_after", "waited"), [("3", 3.0), ("3600", 10.0)])
def test_post_json_honours_retry_after(retry_sleeps: list[float], retry_after: str, waited: float) -> None:
    """A 429 with Retry-After: the retry waits what the receiver asked (capped at 10 s), not the backoff."""
    with Receiver(fail_first=2, fail_status=429, retry_after=retry_after) as busy:
        result = post_json(busy.url, b"{}", TOKEN, timeout=2, retries=3, backoff=0.5, idempotency_key="k")
    assert retry_sleeps == [waited, waited]
    assert (result.status, result.attempts, result.http_status) == ("delivered", 3, 200)
    assert len(busy.requests) == 3 and {r["headers"]["Idempotency-Key"] for r in busy.requests} == {"k"}


def test_post_json_reports_a_refused_connection_after_the_retries(retry_sleeps: list[float]) -> None:
    with Receiver() as gone:
        url = gone.url
    result = post_json(url, b"{}", None, timeout=2, retries=2, backoff=0.1, idempotency_key="k")
    assert (result.status, result.attempts, result.http_status) == ("failed", 3, None)
    assert result.error is not None and result.error.startswith("cannot connect:")
    assert len(retry_sleeps) == 1  # the first retry goes at once


def test_post_json_goes_through_the_proxy_the_environment_names(monkeypatch: pytest.MonkeyPatch) -> None:
    with Receiver() as proxy:
        monkeypatch.setenv("HTTP_PROXY", proxy.url.rsplit("/hooks", 1)[0])
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        result = post_json(
            "http://hooks.example.invalid/alerts", b"{}", TOKEN, timeout=2, retries=0, backoff=0, idempotency_key="k"
        )
    assert (result.status, result.attempts, result.target) == ("delivered", 1, "http://hooks.example.invalid")
    (request,) = proxy.requests
    assert request["path"] == "http://hooks.example.invalid/alerts"  # the absolute form a proxy is sent


def test_webhook_retries_until_delivered(
    instance: dg.DagsterInstance,
    data_dir: Path,
    alert_env: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PIPELINE_ALERTS__WEBHOOK_RETRIES", "3")
    with Receiver(fail_first=2) as flaky:
        monkeypatch.setenv("PIPELINE_ALERT_WEBHOOK_URL", flaky.url)
        materialize_tiny(instance)
        tick(instance, data_dir)
    lines = read_lines(alert_env)
    assert len(lines) == 2
    statuses = [line["delivery"]["webhook"] for line in lines]
    # The first alert needed three attempts (503, 503, 200); the second went through at once.
    assert sorted(s["attempts"] for s in statuses) == [1, 3]
    assert all(s["status"] == "delivered" and s["http_status"] == 200 for s in statuses)
    assert len(flaky.requests) == 4
    assert len({r["headers"]["Idempotency-Key"] for r in flaky.requests}) == 2
    assert sorted(p["key"] for p in flaky.payloads()[2:]) == sorted(line["key"] for line in lines)


def test_webhook_that_never_answers_times_out_and_alert_stays_in_jsonl(
    instance: dg.DagsterInstance,
    data_dir: Path,
    alert_env: Path,
    monkeypatch: pytest.MonkeyPatch,
    sent_metrics: list[tuple],
    capfd: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("PIPELINE_ALERTS__WEBHOOK_TIMEOUT_SECONDS", "0.3")
    monkeypatch.setenv("PIPELINE_ALERTS__WEBHOOK_RETRIES", "1")
    with Receiver(hang=True) as silent:
        monkeypatch.setenv("PIPELINE_ALERT_WEBHOOK_URL", silent.url)
        materialize_tiny(instance)
        result = tick(instance, data_dir)
        attempts = len(silent.requests)
    lines = read_lines(alert_env)
    assert len(lines) == 2
    first, second = (line["delivery"]["webhook"] for line in lines)
    assert first == {**first, "status": "failed", "attempts": 2, "http_status": None, "error": "no answer within 0.3 s"}
    # After the webhook failed, the rest of the batch gets a single attempt.
    assert second["status"] == "failed" and second["attempts"] == 1
    assert attempts == 3
    assert sorted((attrs["channel"], attrs["outcome"]) for _, _, attrs in sent_metrics) == [
        ("jsonl", "delivered"),
        ("jsonl", "delivered"),
        ("webhook", "failed"),
        ("webhook", "failed"),
    ]
    out, err = capfd.readouterr()
    assert "webhook failed after 2 attempt(s): no answer within 0.3 s" in err
    assert result.cursor is not None
    # Not resent on the next tick: the alert is recorded (with its failed delivery).
    tick(instance, data_dir, result.cursor)
    assert len(read_lines(alert_env)) == 2
    assert_token_nowhere(data_dir, texts=(out, err))


def test_without_webhook_alerts_go_to_jsonl_only_and_bad_lines_are_reported(
    instance: dg.DagsterInstance,
    data_dir: Path,
    alert_env: Path,
    capfd: pytest.CaptureFixture[str],
) -> None:
    alert_env.parent.mkdir(parents=True)
    alert_env.write_text('{"key": "old"}\n{"key": "cut short')  # a crash mid-line
    materialize_tiny(instance)
    tick(instance, data_dir)
    assert f"{alert_env}:2: not JSON" in capfd.readouterr().err
    text = alert_env.read_text()
    assert text.startswith('{"key": "old"}\n{"key": "cut short\n')  # the new line is not glued on
    lines = [json.loads(line) for line in text.splitlines()[2:]]
    assert [line["delivery"]["webhook"] for line in lines] == [{"status": "not_configured"}] * 2


def test_a_token_echoed_in_check_figures_is_redacted_everywhere(
    data_dir: Path,
    alert_env: Path,
    receiver: Receiver,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("PIPELINE_ALERT_WEBHOOK_URL", receiver.url)
    caplog.set_level(logging.DEBUG)
    from market_pipeline.core.alerts.model import Alert
    from market_pipeline.core.security.scrub import REDACTED

    careless = Alert(
        key="check:r1:7",
        kind=CHECK_FAILED,
        severity="WARN",
        asset="tiny",
        partitions=[DAY],
        check=f"echo {TOKEN}",
        blocking=False,
        description=f"header was Bearer {TOKEN}",
        figures={"echo": [f"Authorization: Bearer {TOKEN}"], TOKEN: 1},
        run_id="r1",
        job="j",
        run_url="http://x/runs/r1",
        occurred_at="2024-03-02T00:00:00.000+00:00",
    )
    delivery.deliver_alerts([careless], alert_delivery(load_settings()))
    (line,) = read_lines(alert_env)
    assert line["description"] == f"header was Bearer {REDACTED}"
    assert line["figures"] == {"echo": [f"Authorization: Bearer {REDACTED}"], REDACTED: 1}
    assert receiver.requests[0]["headers"]["Authorization"] == f"Bearer {TOKEN}"
    assert_token_nowhere(data_dir, texts=(caplog.text, receiver.requests[0]["body"].decode()))


@pytest.mark.slow
def _skew_episodes(data: Path) -> dict[str, list[dict]]:
    """Each synthetic instrument's clock-skew episodes on the demo's day, from its manifest."""
    truth = data / "sources" / "synthetic" / "_ground_truth" / "synthetic"
    return {
        f"{m['exchange']}:{m['symbol']}": m["faults"]["clock_skew_episodes"]
        for m in (json.loads(p.read_text()) for p in sorted(truth.rglob("manifest.json")))
    }


@pytest.mark.graph
def test_demo_injected_fault_alerts_to_jsonl_and_webhook(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    dagster_home: Path,
    receiver: Receiver,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """Issue 4 "Done when": the demo with a loopback webhook leaves validation_reports rows, a
    failed check, the alert in alerts.jsonl, the same alert at the webhook, and no token anywhere."""
    from market_pipeline.defs.raw.checks import RAW_CHECKS

    if "clock_skew" not in {check.name for check in RAW_CHECKS}:
        pytest.skip("needs the quality domain's clock_skew check on raw_book_deltas (raw/checks.py)")
    import duckdb

    from market_pipeline.cli.main import main

    data = tmp_path / "data"
    monkeypatch.setenv("PIPELINE_SYNTHETIC__SCALE", "0.02")
    # Books sampled once a minute besides their rows at vendor snapshots: no figure asserted here
    # depends on the sampling, and a sample every 100 ms adds 864,000 rows per instrument-day.
    monkeypatch.setenv("PIPELINE_BOOK__SAMPLE_INTERVAL_MS", "60000")
    monkeypatch.setenv("PIPELINE_ALERT_WEBHOOK_URL", receiver.url)
    monkeypatch.setenv("PIPELINE_ALERT_WEBHOOK_TOKEN", TOKEN)
    code = main(["demo", "--days", "1", "--start-date", "2024-03-01", "--data-dir", str(data)])
    out, err = capfd.readouterr()
    assert code == 0, out + err

    lines = read_lines(data / "alerts" / "alerts.jsonl")
    (skew,) = [line for line in lines if line["check"] == "clock_skew"]
    assert (skew["asset"], skew["severity"], skew["blocking"]) == ("raw_book_deltas", "WARN", False)
    assert skew["partitions"] == ["2024-03-01"]
    # The fault is on every instrument of the day; the hourly p99 catches a minutes-long episode on
    # every instrument where it delayed messages (the manifest says where: a thin market can have
    # none in a minute-long episode).
    skewed = [key for key, episodes in _skew_episodes(data).items() if any(e["delta_rows"] for e in episodes)]
    assert skewed
    for key in skewed:
        assert skew["figures"][f"{key} worst_hour_p99_ms"] > 500, key
        assert skew["figures"][f"{key} messages_above_max"] == 0  # WARN, not ERROR
    assert skew["delivery"]["webhook"]["status"] == "delivered"
    received = {p["key"]: p for p in receiver.payloads()}
    assert received[skew["key"]] == {k: v for k, v in skew.items() if k not in ("delivery", "logged_at")}
    assert sorted(received) == sorted(line["key"] for line in lines)

    with duckdb.connect(str(data / "warehouse.duckdb"), read_only=True) as con:
        (rows,) = con.execute("SELECT count(*) FROM main.validation_reports").fetchone()
    assert rows >= 2  # one per instrument-day

    assert "Failed checks" in out and "clock_skew" in out
    assert str(data / "reports" / "dt=2024-03-01") in out
    # The first alert as readable fields, its description whole (wrapped, never clipped).
    assert f"  severity     {lines[0]['severity']}" in out
    assert f"  key          {lines[0]['key']}" in out
    assert " ".join(lines[0]["description"].split()) in " ".join(out.split())
    assert json.dumps(lines[0], sort_keys=True) not in out  # not the 4 KB JSON line
    assert skew["key"] in out
    assert "~" not in out.split("Failed checks")[1].split("Reports")[0]  # no clipped description
    # Progress while it ran (stderr is no terminal here: plain lines), rows done out of rows.
    assert "step raw_book_deltas: started" in err
    assert re.search(r"done raw_book_deltas 2024-03-01 BINANCE:BTC-USDT: [\d,]+ rows in [\d.]+ s", err), err
    assert re.search(r"done reconstructed_books 2024-03-01 BINANCE:BTC-USDT: [\d,]+ rows in", err), err
    assert_token_nowhere(dagster_home, data, texts=(out, err, *(r["body"].decode() for r in receiver.requests)))

"""A remote dependency that fails (issue 36, item 1), through the CLI on loopback servers: the lake's
bucket (endpoint on a closed port, a key the server does not know, no such bucket), the DuckLake
catalog (nothing listening, a database that does not exist) and the alert webhook. Each is one
`error:` line on stderr naming the setting and what to check, with the exit code of its class
(docs/operations.md, Exit codes), no traceback, and no secret in the output or the logs."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from moto.core.authorization import enable_iam_authentication

from market_pipeline.cli.main import main
from market_pipeline.core import context
from market_pipeline.core.errors import EXIT_CONFIGURATION, EXIT_RUN_FAILED
from market_pipeline.core.lake import files, storage
from market_pipeline.core.lake.store_errors import LakeStoreUnavailable
from market_pipeline_tests.support.postgres_server import free_port, running_postgres
from market_pipeline_tests.support.s3_server import REGION, LoopbackS3

SECRET = "lake-secret-never-printed"
PASSWORD = "catalog-password-never-printed"
TOKEN = "webhook-token-never-printed"
RUN = ["run", "--start-date", "2024-01-02", "--end-date", "2024-01-02", "--select", "raw_trades"]
READ_ONLY = ("s3:ListBucket", "s3:HeadBucket", "s3:GetBucketLocation", "s3:GetObject")


@pytest.fixture
def caught_logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG)  # the traceback goes to the log at debug level: no secret there either
    return caplog


def use_lake(
    monkeypatch: pytest.MonkeyPatch, endpoint: str, bucket: str, keys: tuple[str, str] = ("lake-writer", SECRET)
) -> None:
    """A remote lake at `endpoint`, with credentials whose secret the output must never show."""
    for name, value in {
        "PIPELINE_LAKE_URL": f"s3://{bucket}/team/lake",
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": keys[0],
        "AWS_SECRET_ACCESS_KEY": keys[1],
        "AWS_REGION": REGION,
    }.items():
        monkeypatch.setenv(name, value)
    storage.s3_filesystem.cache_clear()  # this test's endpoint
    storage._s3_client.cache_clear()


@pytest.fixture(autouse=True)
def _fresh_s3_clients() -> Iterator[None]:
    yield
    storage.s3_filesystem.cache_clear()
    storage._s3_client.cache_clear()


def closed_port() -> int:
    return free_port()  # bound, read and closed: nothing listens there


def one_error_line(capsys: pytest.CaptureFixture[str], logs: pytest.LogCaptureFixture, *secrets: str) -> str:
    """The single `error:` line on stderr (no traceback, nothing on stdout), after checking no secret
    is anywhere."""
    out = capsys.readouterr()
    assert out.out == ""
    for secret in secrets:
        assert secret not in out.out + out.err + logs.text
    lines = out.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), out.err
    assert "Traceback" not in out.err and "internal error" not in out.err
    return lines[0]


def new_bucket(s3: LoopbackS3) -> str:
    name = f"lake-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(name)
    return name


def test_a_lake_endpoint_nobody_listens_on(env, monkeypatch, capsys, caught_logs):
    port = closed_port()
    use_lake(monkeypatch, f"http://127.0.0.1:{port}", "lake-bucket")
    assert main(RUN) == EXIT_CONFIGURATION
    line = one_error_line(capsys, caught_logs, SECRET)
    assert line.startswith("error: cannot reach the lake's bucket 'lake-bucket' (PIPELINE_LAKE_URL)")
    assert f"AWS_ENDPOINT_URL=http://127.0.0.1:{port}" in line and "check that the store is up" in line


def test_a_key_the_lake_store_does_not_know(env, s3, monkeypatch, capsys, caught_logs):
    use_lake(monkeypatch, s3.url, new_bucket(s3))
    with enable_iam_authentication():  # the server checks keys: lake-writer is nobody's
        assert main(RUN) == EXIT_CONFIGURATION
    line = one_error_line(capsys, caught_logs, SECRET)
    assert "refused the credentials (INVALID_ACCESS_KEY_ID on ListObjectsV2" in line
    assert "PIPELINE_LAKE_URL" in line and "check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY" in line
    assert "credentials from environment variables AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY" in line


def test_a_lake_bucket_that_does_not_exist(env, s3, monkeypatch, capsys, caught_logs):
    use_lake(monkeypatch, s3.url, "no-such-bucket")
    assert main(RUN) == EXIT_CONFIGURATION
    line = one_error_line(capsys, caught_logs, SECRET)
    assert "the lake's bucket 'no-such-bucket' (PIPELINE_LAKE_URL)" in line and "does not exist" in line
    assert "create the bucket, or correct PIPELINE_LAKE_URL" in line


def test_keys_that_may_read_but_not_write_fail_the_run_with_the_same_line(
    local_source, s3, monkeypatch, capsys, caught_logs
):
    """A fault inside a run: the bucket lists (the check before the run passes), the first upload is
    refused. The step fails with the store's message and the run exits with its code, no traceback."""
    bucket = new_bucket(s3)
    key_id, secret = s3.reader_keys(f"reader-{bucket}", [bucket], READ_ONLY)
    use_lake(monkeypatch, s3.url, bucket, (key_id, secret))
    caught_logs.clear()  # the test's own IAM calls logged the new key: only the command's logs count
    with enable_iam_authentication():
        code = main(["run", "--start-date", "2024-03-01", "--end-date", "2024-03-01", "--select", "raw_book_deltas"])
    out = capsys.readouterr()
    assert code == EXIT_CONFIGURATION, out.err[-3000:]
    assert secret not in out.out + out.err + caught_logs.text
    assert "Traceback" not in out.err and "Stack Trace" not in out.err
    failure = out.err.split("error: the run failed", 1)[1].strip().splitlines()
    assert failure[0] == "step raw_book_deltas failed:" and len(failure) == 2, failure
    assert f"the lake's bucket '{bucket}' (PIPELINE_LAKE_URL)" in failure[1]
    assert "refused the credentials (AccessDenied on PutObject" in failure[1]


def test_a_write_into_a_missing_bucket_keeps_the_store_error_as_its_cause(s3, monkeypatch, tmp_path: Path):
    """Inside a run (here without one): the upload's botocore error becomes the same kind, named."""
    use_lake(monkeypatch, s3.url, "no-such-bucket")
    final = storage.lake_root("s3://no-such-bucket/team/lake", tmp_path) / "raw" / "data.parquet"
    writing = context.CoreContext(remote_lake=True, upload_dir=tmp_path / "uploads")
    with pytest.raises(LakeStoreUnavailable) as info, context.using(writing):
        files.write_atomic(final, lambda tmp: tmp.write_bytes(b"rows"))
    assert "'no-such-bucket' (PIPELINE_LAKE_URL)" in str(info.value) and "NoSuchBucket on PutObject" in str(info.value)
    assert info.value.__cause__ is not None and info.value.exit_code == EXIT_CONFIGURATION
    assert not list((tmp_path / "uploads").glob("*"))  # the local copy is not left behind


def test_a_catalog_nobody_listens_on(env, monkeypatch, capsys, caught_logs):
    port = closed_port()
    url = f"ducklake:postgres:host=127.0.0.1 port={port} dbname=catalog user=market password={PASSWORD}"
    monkeypatch.setenv("PIPELINE_CATALOG_URL", url)
    assert main(RUN) == EXIT_CONFIGURATION
    line = one_error_line(capsys, caught_logs, PASSWORD)
    assert line.startswith("error: PIPELINE_CATALOG_URL: cannot attach the warehouse DuckLake")
    assert "password=***" in line and f"port {port} failed: Connection refused" in line
    assert "check that PostgreSQL is up" in line


def test_a_catalog_database_that_does_not_exist(env, monkeypatch, capsys, caught_logs):
    with running_postgres("market") as server:
        url = f"ducklake:postgres:{server.libpq('no_such_catalog')} password={PASSWORD}"
        monkeypatch.setenv("PIPELINE_CATALOG_URL", url)
        assert main(RUN) == EXIT_CONFIGURATION
    line = one_error_line(capsys, caught_logs, PASSWORD)
    assert "PIPELINE_CATALOG_URL: cannot attach" in line and 'database "no_such_catalog" does not exist' in line


def test_a_webhook_nobody_listens_on(env, monkeypatch, capsys, caught_logs):
    port = closed_port()
    monkeypatch.setenv("PIPELINE_ALERT_WEBHOOK_URL", f"http://alerts:{PASSWORD}@127.0.0.1:{port}/hook")
    monkeypatch.setenv("PIPELINE_ALERT_WEBHOOK_TOKEN", TOKEN)
    monkeypatch.setenv("PIPELINE_ALERTS__WEBHOOK_BACKOFF_SECONDS", "0.01")
    assert main(["alert-test"]) == EXIT_RUN_FAILED  # alert-test's own code for "not delivered"
    out = capsys.readouterr()
    assert '"status": "failed"' in out.out
    for secret in (PASSWORD, TOKEN):
        assert secret not in out.out + out.err + caught_logs.text
        assert secret not in (env["data"] / "alerts" / "alerts.jsonl").read_text()
    (line,) = out.err.strip().splitlines()
    assert line.startswith(f"error: the webhook (PIPELINE_ALERT_WEBHOOK_URL) at http://127.0.0.1:{port} ")
    assert "cannot connect" in line and "check that the receiver is up" in line and "Traceback" not in out.err

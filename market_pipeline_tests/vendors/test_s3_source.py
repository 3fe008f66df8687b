"""The `s3` source: real boto3 calls over HTTP to a loopback S3 server (moto) on 127.0.0.1."""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import logging
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import boto3
import polars as pl
import pytest
from botocore.response import StreamingBody
from moto.core.authorization import enable_iam_authentication

from market_pipeline_tests.support.dagster_events import materializations
from market_pipeline_tests.support.dagster_instance import range_tags
from market_pipeline_tests.support.raw_lake import lake_file
from market_pipeline_tests.support.s3_server import LoopbackS3
from market_pipeline_tests.support.vendor_lake import DEFAULT_INSTRUMENTS, VendorLake, truncate_file, vendor_frame

PREFIX = "market-data/cryptofeed"  # the default s3.prefix
DAYS = [dt.date(2024, 3, 1), dt.date(2024, 3, 2)]
ONLY_FIRST_INSTRUMENT_DAY = dt.date(2024, 3, 3)  # a day the second instrument is missing
TABLES = ("trades", "book_delta_v2")
KEYS = [f"{e}:{s}" for e, s in DEFAULT_INSTRUMENTS]
DUMMY_SECRET = "dummy-secret-access-key"


def row_count(table: str, index: int, day: dt.date) -> int:
    return {"trades": 13, "book_delta_v2": 29}[table] + 3 * index + day.day


def expected_frame(table: str, index: int, day: dt.date) -> pl.DataFrame:
    """What the raw lake must hold: client spelling, times as int64 ns."""
    return vendor_frame(table, day, row_count(table, index, day), "client", seed=index)


def retime(path: Path, dtype: pl.DataType) -> None:
    """Store a vendor file's time columns (either spelling) as a timestamp type instead of int64 ns."""
    df = pl.read_parquet(path)
    times = [c for c in df.columns if c in ("origin_time", "received_time", "timestamp", "receipt_timestamp")]
    df.with_columns(pl.col(c).cast(dtype) for c in times).write_parquet(path)


@dataclass
class Store:
    server: LoopbackS3
    bucket: str  # the primary
    mirror: str  # same files, for failover
    sample: str  # same files, public (anonymous reads)
    uploaded: dict[str, bytes]
    reader_key_id: str  # IAM user allowed the mirror only (with IAM authentication on)
    reader_secret: str


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    server = LoopbackS3()
    root = tmp_path_factory.mktemp("vendor")
    lake = VendorLake(root)
    lake(tables=TABLES, days=DAYS, rows=row_count)  # client spelling, then stored spelling
    lake(tables=("trades",), instruments=DEFAULT_INSTRUMENTS[:1], days=[ONLY_FIRST_INSTRUMENT_DAY], rows=row_count)
    retime(lake.path("trades", *DEFAULT_INSTRUMENTS[1], DAYS[1]), pl.Datetime("ns", "UTC"))
    retime(lake.path("book_delta_v2", *DEFAULT_INSTRUMENTS[0], DAYS[1]), pl.Datetime("ns"))
    for bucket in ("vendor-primary", "vendor-mirror", "vendor-sample"):
        server.create_bucket(bucket)
        uploaded = server.upload_tree(bucket, PREFIX, root)
    server.make_public("vendor-sample")
    key_id, secret = server.reader_keys("mirror-reader", ["vendor-mirror"])
    try:
        yield Store(server, "vendor-primary", "vendor-mirror", "vendor-sample", uploaded, key_id, secret)
    finally:
        server.stop()


@pytest.fixture(autouse=True)
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Dummy keys in the environment, empty AWS files, no instance metadata lookups."""
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    empty = tmp_path / "aws-empty"
    empty.write_text("")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(empty))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(empty))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "dummy-key-id")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", DUMMY_SECRET)


@pytest.fixture
def s3_env(store: Store, data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Store:
    monkeypatch.setenv("PIPELINE_SOURCE", "s3")
    monkeypatch.setenv("PIPELINE_S3__BUCKET", store.bucket)
    monkeypatch.setenv("PIPELINE_S3__ENDPOINT_URL", store.server.url)
    monkeypatch.setenv("PIPELINE_S3__MAX_ATTEMPTS", "2")
    return store


@pytest.fixture
def boto_events(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, object]]:
    """(event, handler) pairs registered on every boto3 client created during the test."""
    events: list[tuple[str, object]] = []
    real_client = boto3.session.Session.client

    def client(self, *args, **kwargs):
        made = real_client(self, *args, **kwargs)
        for event, handler in events:
            made.meta.events.register(event, handler)
        return made

    monkeypatch.setattr(boto3.session.Session, "client", client)
    return events


@pytest.fixture
def sent(boto_events: list) -> list:
    """Every HTTP request botocore sends (retries included)."""
    requests: list = []
    boto_events.append(("before-send.s3", lambda request, **_: requests.append(request)))
    return requests


def object_gets(requests: list) -> list:
    """The GetObject requests among `requests` (not the listings)."""
    return [r for r in requests if r.method == "GET" and "list-type" not in r.url and "delimiter" not in r.url]


def gets(requests: list) -> list[str]:
    return [r.url for r in object_gets(requests)]


def make_source(store: Store, data_dir: Path, **overrides):
    from market_pipeline.vendors.crypto_lake.config import S3Settings
    from market_pipeline.vendors.crypto_lake.s3 import S3Source

    fields = {"bucket": store.bucket, "endpoint_url": store.server.url, "max_attempts": 2, **overrides}
    return S3Source(S3Settings(**fields), data_dir / "sources" / "s3")


def universe():
    from market_pipeline.settings import load_settings

    return load_settings().universe


def materialize(instance, names: list[str], start: dt.date, end: dt.date, raise_on_error: bool = True):
    import dagster as dg

    from market_pipeline_tests.support.dagster_instance import assets_named, code_location

    defs = code_location()
    return dg.materialize(
        assets_named(defs, *names),
        instance=instance,
        resources=defs.resources,
        tags=range_tags(start.isoformat(), end.isoformat()),
        raise_on_error=raise_on_error,
    )


# ---------------------------------------------------------------------------------------
# The raw stage over S3
# ---------------------------------------------------------------------------------------


def test_raw_stage_pulls_range_in_both_spellings_and_resumes(instance, s3_env: Store, data_dir: Path, sent: list):
    result = materialize(instance, ["raw_trades", "raw_book_deltas"], DAYS[0], DAYS[-1])
    assert result.success
    primary = f"primary: s3://{s3_env.bucket} at {s3_env.server.url}"
    for asset_name, table in (("raw_trades", "trades"), ("raw_book_deltas", "book_delta_v2")):
        for index, (exchange, symbol) in enumerate(DEFAULT_INSTRUMENTS):
            for day in DAYS:
                stored = pl.read_parquet(lake_file(data_dir, table, exchange, symbol, day))
                assert stored.equals(expected_frame(table, index, day)), (table, symbol, day)
        mats = materializations(instance, asset_name, result.run_id)
        assert sorted(mats) == [d.isoformat() for d in DAYS]
        for day in DAYS:
            meta = mats[day.isoformat()]
            assert meta["rows"] == sum(row_count(table, i, day) for i in range(len(KEYS)))
            assert all(meta[f"{key} served_by"] == primary for key in KEYS)
    assert len(gets(sent)) == len(TABLES) * len(KEYS) * len(DAYS)

    # A second fetch of everything finds the cache current: listings only, no object GETs.
    sent.clear()
    source = make_source(s3_env, data_dir)
    for table in TABLES:
        for instrument in universe():
            for day in DAYS:
                paths = source.fetch(table, instrument, day)
                assert [p.name for p in paths] == ["data.parquet"]
    assert gets(sent) == []
    assert len(sent) == len(TABLES) * len(KEYS) * len(DAYS)


def test_missing_day_is_recorded_and_the_rest_of_the_range_lands(instance, s3_env: Store, data_dir: Path):
    result = materialize(instance, ["raw_trades"], DAYS[1], ONLY_FIRST_INSTRUMENT_DAY, raise_on_error=False)
    assert result.success  # the complete day landed
    mats = materializations(instance, "raw_trades", result.run_id)
    exchange, symbol = DEFAULT_INSTRUMENTS[1]
    text = mats[ONLY_FIRST_INSTRUMENT_DAY.isoformat()]["skipped_instruments"][f"{exchange}:{symbol}"]
    assert f"{exchange}:{symbol} on {ONLY_FIRST_INSTRUMENT_DAY.isoformat()}" in text
    missing_prefix = (
        f"s3://{s3_env.bucket}/{PREFIX}/trades/exchange={exchange}/symbol={symbol}/dt={ONLY_FIRST_INSTRUMENT_DAY}/"
    )
    assert missing_prefix in text
    assert not lake_file(data_dir, "trades", exchange, symbol, ONLY_FIRST_INSTRUMENT_DAY).exists()
    first = pl.read_parquet(lake_file(data_dir, "trades", *DEFAULT_INSTRUMENTS[0], ONLY_FIRST_INSTRUMENT_DAY))
    assert first.equals(expected_frame("trades", 0, ONLY_FIRST_INSTRUMENT_DAY))
    # The complete day; the missing instrument-day is recorded as skipped, so downstream stages leave it out.
    assert sorted(d for d, m in mats.items() if "skipped_instruments" not in m) == [DAYS[1].isoformat()]
    assert mats[DAYS[1].isoformat()]["rows"] == sum(row_count("trades", i, DAYS[1]) for i in range(len(KEYS)))


def test_failover_to_mirror_is_recorded_and_the_secret_never_leaks(
    instance,
    s3_env: Store,
    data_dir: Path,
    dagster_home: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture,
):
    import dagster as dg

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_env.reader_key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_env.reader_secret)  # the planted secret
    monkeypatch.setenv("PIPELINE_S3__FALLBACK_BUCKET", s3_env.mirror)
    caplog.set_level(logging.DEBUG)
    with enable_iam_authentication():  # the reader may read the mirror only: the primary denies
        result = materialize(instance, ["raw_trades"], DAYS[0], DAYS[-1])
    assert result.success
    fallback = f"fallback: s3://{s3_env.mirror} at {s3_env.server.url}"
    mats = materializations(instance, "raw_trades", result.run_id)
    for day in DAYS:
        for index, key in enumerate(KEYS):
            assert mats[day.isoformat()][f"{key} served_by"] == fallback
            assert mats[day.isoformat()][f"{key} detail"]["served_by"] == fallback
            stored = pl.read_parquet(lake_file(data_dir, "trades", *DEFAULT_INSTRUMENTS[index], day))
            assert stored.equals(expected_frame("trades", index, day))
    assert "access denied" in caplog.text  # the failover was logged, with its reason

    secret = s3_env.reader_secret
    assert secret not in caplog.text
    captured = capfd.readouterr()
    assert secret not in captured.out + captured.err
    for entry in instance.all_logs(result.run_id):
        assert secret not in dg.serialize_value(entry)
    for root in (data_dir, dagster_home):
        for path in (p for p in root.rglob("*") if p.is_file()):
            assert secret.encode() not in path.read_bytes(), path


# ---------------------------------------------------------------------------------------
# The source on its own: resume, integrity, errors, failover, anonymous access
# ---------------------------------------------------------------------------------------


def test_interrupted_download_is_downloaded_again_and_verified(store: Store, data_dir: Path, sent: list):
    source = make_source(store, data_dir)
    instrument, day = universe()[1], DAYS[0]
    key = f"{PREFIX}/trades/exchange={instrument.exchange}/symbol={instrument.symbol}/dt={day}/data.parquet"
    [path] = source.fetch("trades", instrument, day)
    assert path.read_bytes() == store.uploaded[key]
    assert len(gets(sent)) == 1
    sidecar = path.with_name(".data.parquet.s3.json")
    record = json.loads(sidecar.read_text())
    assert record["size"] == len(store.uploaded[key]) and record["key"] == key

    def refetch_gets() -> int:
        sent.clear()
        assert source.fetch("trades", instrument, day) == [path]
        assert path.read_bytes() == store.uploaded[key]
        return len(gets(sent))

    assert refetch_gets() == 0
    truncate_file(path)  # a download cut short (or a damaged cache)
    assert refetch_gets() == 1
    sidecar.write_text(json.dumps({**record, "etag": "0" * 32}))  # the object changed at the vendor
    assert refetch_gets() == 1
    sidecar.unlink()  # the file landed but its record did not
    assert refetch_gets() == 1
    assert refetch_gets() == 0
    assert sorted(p.name for p in path.parent.iterdir()) == [".data.parquet.s3.json", "data.parquet"]


def test_short_transfer_is_retried_then_fails_clearly(store: Store, data_dir: Path, sent: list, boto_events: list):
    from market_pipeline.vendors.crypto_lake.s3_download import S3IntegrityError

    short_transfers = {"left": 1}

    def cut_body(parsed, **_):
        if short_transfers["left"] > 0 and "Body" in parsed:
            short_transfers["left"] -= 1
            data = parsed["Body"].read()[:100]
            parsed["Body"] = StreamingBody(io.BytesIO(data), len(data))

    boto_events.append(("after-call.s3.GetObject", cut_body))
    instrument, day = universe()[0], DAYS[1]
    source = make_source(store, data_dir, max_attempts=3)
    [path] = source.fetch("book_delta_v2", instrument, day)  # the first transfer is short; the retry resumes it
    key = f"{PREFIX}/book_delta_v2/exchange={instrument.exchange}/symbol={instrument.symbol}/dt={day}/data.parquet"
    assert path.read_bytes() == store.uploaded[key]
    first, resumed = object_gets(sent)
    assert "Range" not in first.headers and resumed.headers["Range"] == b"bytes=100-"
    etag = json.loads(path.with_name(".data.parquet.s3.json").read_text())["etag"]
    assert first.headers["If-Match"] == resumed.headers["If-Match"] == f'"{etag}"'.encode()

    short_transfers["left"] = 10**6  # every transfer is short
    other_day = DAYS[0]
    source = make_source(store, data_dir, max_attempts=3)
    with pytest.raises(S3IntegrityError) as failed:
        source.fetch("book_delta_v2", instrument, other_day)
    message = str(failed.value)
    assert f"s3://{store.bucket}/{PREFIX}/book_delta_v2/" in message
    assert "3 time(s)" in message and "size mismatch: received 100 of" in message
    assert "attempt 3: size mismatch: received 300 of" in message  # each attempt resumed the last
    target_dir = path.parents[1] / f"dt={other_day}"
    assert not target_dir.exists() or list(target_dir.iterdir()) == []  # no partial file, no temp file


def test_object_changed_mid_download_restarts_from_byte_0_of_the_new_version(
    store: Store, data_dir: Path, sent: list, boto_events: list, caplog: pytest.LogCaptureFixture
):
    """The first transfer breaks off and the vendor replaces the object meanwhile: the resume
    (pinned to the old ETag) gets 412, a warning names the key, and the new version is downloaded
    whole; the old version's bytes are never joined to the new one's."""
    instrument, day = universe()[1], DAYS[1]
    key = f"{PREFIX}/trades/exchange={instrument.exchange}/symbol={instrument.symbol}/dt={day}/data.parquet"
    other = f"{PREFIX}/trades/exchange={instrument.exchange}/symbol={instrument.symbol}/dt={DAYS[0]}/data.parquet"
    original, replacement = store.uploaded[key], store.uploaded[other]
    assert original != replacement
    cut = {"left": 1}

    def cut_body_and_replace_the_object(parsed, **_):
        if cut["left"] > 0 and "Body" in parsed:
            cut["left"] -= 1
            data = parsed["Body"].read()[:100]
            parsed["Body"] = StreamingBody(io.BytesIO(data), len(data))
            store.server.s3.put_object(Bucket=store.bucket, Key=key, Body=replacement)

    boto_events.append(("after-call.s3.GetObject", cut_body_and_replace_the_object))
    source = make_source(store, data_dir, max_attempts=3)
    caplog.set_level(logging.WARNING)
    try:
        [path] = source.fetch("trades", instrument, day)
    finally:
        store.server.s3.put_object(Bucket=store.bucket, Key=key, Body=original)
    assert path.read_bytes() == replacement
    record = json.loads(path.with_name(".data.parquet.s3.json").read_text())
    new_etag = hashlib.md5(replacement, usedforsecurity=False).hexdigest()
    old_etag = hashlib.md5(original, usedforsecurity=False).hexdigest()
    assert (record["etag"], record["size"]) == (new_etag, len(replacement))
    first, resumed, fresh = object_gets(sent)
    assert first.headers["If-Match"] == resumed.headers["If-Match"] == f'"{old_etag}"'.encode()
    assert resumed.headers["Range"] == b"bytes=100-"
    assert fresh.headers["If-Match"] == f'"{new_etag}"'.encode() and "Range" not in fresh.headers
    assert (
        f"s3://{store.bucket}/{key} changed during the download (ETag {old_etag} -> {new_etag}); "
        "starting again from byte 0 of the new version"
    ) in caplog.text


def test_a_rejected_download_is_named_by_its_object(s3_env: Store, data_dir: Path):
    """Issue 36, item 6: the import checks the downloaded copy; its refusal names the object."""
    from market_pipeline.defs.common.importer import PartitionRejected, import_partition
    from market_pipeline.settings import load_settings
    from market_pipeline.vendors.registry import build_source

    instrument, day = universe()[0], dt.date(2024, 3, 9)
    key = f"{PREFIX}/trades/exchange={instrument.exchange}/symbol={instrument.symbol}/dt={day}/part-0.parquet"
    body = io.BytesIO()
    pl.DataFrame({"price": [1.0]}).write_parquet(body)  # no times, no sizes
    s3_env.server.s3.put_object(Bucket=s3_env.bucket, Key=key, Body=body.getvalue())
    try:
        settings = load_settings()
        with pytest.raises(PartitionRejected) as info:
            import_partition(build_source(settings), settings, "trades", instrument, day, "run-1")
    finally:
        s3_env.server.s3.delete_object(Bucket=s3_env.bucket, Key=key)  # the module's store serves other tests
    message = str(info.value)
    assert f"s3://{s3_env.bucket}/{key}: missing column(s)" in message and "sources/s3" not in message


def test_access_denied_names_bucket_prefix_and_credentials_source(store: Store, data_dir: Path, monkeypatch):
    from market_pipeline.vendors.crypto_lake.s3_client import S3AccessDenied

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", store.reader_key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", store.reader_secret)
    source = make_source(store, data_dir)
    with enable_iam_authentication(), pytest.raises(S3AccessDenied) as denied:
        source.fetch("trades", universe()[0], DAYS[0])
    message = str(denied.value)
    assert "access denied (AccessDenied)" in message
    assert f"bucket '{store.bucket}'" in message and f"prefix '{PREFIX}'" in message
    assert "credentials from environment variables AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY" in message
    assert store.reader_secret not in message


def test_unreachable_endpoint_fails_over_to_the_fallback_endpoint(store: Store, data_dir: Path):
    with socket.socket() as probe:  # a loopback port nobody listens on
        probe.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{probe.getsockname()[1]}"
    source = make_source(store, data_dir, endpoint_url=dead, fallback_endpoint_url=store.server.url)
    instrument = universe()[0]
    assert source.available_days("trades", instrument) == [*DAYS, ONLY_FIRST_INSTRUMENT_DAY]
    [path] = source.fetch("trades", instrument, DAYS[0])
    assert pl.read_parquet(path).height == row_count("trades", 0, DAYS[0])
    assert (
        source.served_by[("trades", instrument.key, DAYS[0])] == f"fallback: s3://{store.bucket} at {store.server.url}"
    )

    only_dead = make_source(store, data_dir, endpoint_url=dead, max_attempts=1)
    from market_pipeline.vendors.crypto_lake.s3_client import S3TargetFailed

    with pytest.raises(S3TargetFailed, match=f"primary: s3://{store.bucket} at {dead} unreachable"):
        only_dead.available_days("trades", instrument)


def test_no_credentials_is_a_clear_error_and_dotenv_credentials_work(
    store: Store, data_dir: Path, monkeypatch: pytest.MonkeyPatch, _hermetic_env: Path
):
    from market_pipeline.vendors.crypto_lake.s3_client import S3CredentialsError

    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    with pytest.raises(S3CredentialsError, match="no AWS credentials found for s3://vendor-primary/") as missing:
        make_source(store, data_dir).fetch("trades", universe()[0], DAYS[0])
    assert "AWS_ACCESS_KEY_ID" in str(missing.value) and "PIPELINE_S3__ANONYMOUS" in str(missing.value)

    # The same keys in the working directory's .env are used (IAM on: only real keys pass).
    (_hermetic_env / ".env").write_text(
        f"AWS_ACCESS_KEY_ID={store.reader_key_id}\nAWS_SECRET_ACCESS_KEY={store.reader_secret}\n"
    )
    source = make_source(store, data_dir, bucket=store.mirror)
    with enable_iam_authentication():
        [path] = source.fetch("trades", universe()[0], DAYS[0])
    assert pl.read_parquet(path).height == row_count("trades", 0, DAYS[0])
    assert source.credentials_source == "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY in .env"


def test_anonymous_access_sends_unsigned_requests(store: Store, data_dir: Path, sent: list):
    source = make_source(store, data_dir, bucket=store.sample, anonymous=True)
    [path] = source.fetch("trades", universe()[1], DAYS[1])
    assert pl.read_parquet(path).height == row_count("trades", 1, DAYS[1])
    assert sent and all("Authorization" not in r.headers for r in sent)


def test_s3_settings_validate_endpoints_and_retries(monkeypatch: pytest.MonkeyPatch):
    from market_pipeline.settings import SettingsError, load_settings

    monkeypatch.setenv("PIPELINE_S3__FALLBACK_ENDPOINT_URL", "127.0.0.1:9000")
    monkeypatch.setenv("PIPELINE_S3__RETRY_MODE", "sometimes")
    with pytest.raises(SettingsError) as bad:
        load_settings()
    problems = "\n".join(bad.value.problems)
    assert "PIPELINE_S3__FALLBACK_ENDPOINT_URL: Value error, must be an http(s) URL" in problems
    assert "PIPELINE_S3__RETRY_MODE" in problems and "9000" not in problems

    monkeypatch.setenv("PIPELINE_S3__FALLBACK_ENDPOINT_URL", "https://mirror.example")
    monkeypatch.setenv("PIPELINE_S3__RETRY_MODE", "adaptive")
    monkeypatch.setenv("PIPELINE_S3__MAX_ATTEMPTS", "7")
    s3 = load_settings().s3
    assert (s3.fallback_endpoint_url, s3.retry_mode, s3.max_attempts) == ("https://mirror.example", "adaptive", 7)
    assert (s3.bucket, s3.prefix, s3.region) == ("qnt.data", PREFIX, "eu-west-1")


def test_a_download_is_a_progress_task_and_a_cached_file_is_not(store: Store, data_dir: Path, progress_tasks):
    """A watcher (the CLI) is told what a step waits for while an object downloads."""
    source = make_source(store, data_dir)
    instrument, day = universe()[1], DAYS[0]
    key = f"{PREFIX}/trades/exchange={instrument.exchange}/symbol={instrument.symbol}/dt={day}/data.parquet"
    source.fetch("trades", instrument, day)
    label = f"downloading s3://{store.bucket}/{key} ({len(store.uploaded[key]) / 1e6:,.1f} MB)"
    assert progress_tasks == [(label, False), (label, True)]
    progress_tasks.clear()
    source.fetch("trades", instrument, day)  # cached: nothing to wait for
    assert progress_tasks == []

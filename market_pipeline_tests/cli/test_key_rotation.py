"""`market-pipeline rotate-key`: every encrypted file under the data dir re-encrypted to the new key,
verified, atomically; re-run-safe after an interruption; a wrong old key replaces nothing; capture
manifests follow. And `market-pipeline alert-test` against a loopback webhook receiver."""

from __future__ import annotations

import base64
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from market_pipeline.cli.main import main
from market_pipeline.core.errors import EXIT_CONFIGURATION, EXIT_CRYPTO
from market_pipeline.core.security import crypto
from market_pipeline.core.security.key_rotation import rotate_tree
from market_pipeline.vendors.live_capture.manifest import Manifest, sha256_file
from market_pipeline_tests.support.files import sha256_tree
from market_pipeline_tests.support.webhook import Receiver

OLD, NEW, OTHER = os.urandom(32), os.urandom(32), os.urandom(32)
CHUNK = 64  # several chunks per file


def _b64(key: bytes) -> str:
    return base64.b64encode(key).decode()


@pytest.fixture
def keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(crypto.MASTER_KEY_ENV, _b64(OLD))
    monkeypatch.setenv(crypto.NEW_MASTER_KEY_ENV, _b64(NEW))


def _seal(path: Path, plaintext: bytes, key: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    plain = path.with_name(path.name + ".plain-src")
    plain.write_bytes(plaintext)
    crypto.encrypt_file(plain, path, key, chunk_size=CHUNK)
    plain.unlink()


def _plaintext(path: Path, key: bytes) -> bytes:
    with crypto.open_decrypted(path, key) as reader:
        return reader.read()


@pytest.fixture
def tree(data_dir: Path) -> dict[Path, bytes]:
    """Encrypted files (one named without .enc), a plain file named .enc, a plain Parquet-ish file,
    and a capture directory with its manifest."""
    contents = {
        data_dir / "captures" / "20240808T23" / "binance_usdm_btcusdt_20240808.gz.enc": os.urandom(300),
        data_dir / "captures" / "20240809T00" / "binance_usdm_btcusdt_20240809.gz.enc": os.urandom(10),
        data_dir / "exports" / "renamed.bin": os.urandom(129),
        data_dir / "exports" / "empty.enc": b"",
    }
    for path, plaintext in contents.items():
        _seal(path, plaintext, OLD)
    (data_dir / "exports" / "plain-named.enc").write_bytes(b"not encrypted at all")
    (data_dir / "lake").mkdir()
    (data_dir / "lake" / "data.parquet").write_bytes(b"PAR1...PAR1")
    manifest = Manifest(data_dir / "captures")
    for path in contents:
        if path.parent.parent.name == "captures":
            manifest.add_file(path, lines=1, first_ns=0, last_ns=1)
    return contents


def _manifest_matches_disk(capture_dir: Path) -> bool:
    entries = json.loads((capture_dir / "manifest.json").read_text())["files"]
    return all(
        sha256_file(capture_dir / e["path"]) == e["sha256"]
        and (capture_dir / e["path"]).stat().st_size == e["bytes"]
        and "rotating_sha256" not in e
        for e in entries
    )


def test_rotate_key_re_encrypts_every_encrypted_file_and_keeps_the_capture_manifest_true(
    keys: None, data_dir: Path, tree: dict[Path, bytes], capsys: pytest.CaptureFixture[str]
) -> None:
    plain_files = (data_dir / "exports" / "plain-named.enc", data_dir / "lake" / "data.parquet")
    untouched = {p: p.read_bytes() for p in plain_files}

    assert main(["rotate-key"]) == 0

    out = capsys.readouterr().out
    assert out.count("  rotated: ") == 4
    assert "4 file(s) rotated, 0 already under the new key" in out
    for path, plaintext in tree.items():
        assert _plaintext(path, NEW) == plaintext
        with pytest.raises(crypto.DecryptionError, match="failed authentication"):
            _plaintext(path, OLD)
        assert path.stat().st_mode & 0o777 == 0o600
    assert {p: p.read_bytes() for p in untouched} == untouched
    assert _manifest_matches_disk(data_dir / "captures")
    assert not [p for p in data_dir.rglob(".*tmp-*")]  # no temporary file left


def test_interrupted_rotation_is_finished_by_running_it_again(
    keys: None, data_dir: Path, tree: dict[Path, bytes], capsys: pytest.CaptureFixture[str]
) -> None:
    # The interruption: one capture file rotated, and the run stopped between its rename and the
    # manifest's commit (the entry still holds the pending digest).
    captures = data_dir / "captures"
    first = sorted(p for p in tree if captures in p.parents)[0]
    journal_calls: list[str] = []

    class StopAfterRename:
        def prepare(self, path: Path, replacement: Path) -> None:
            from market_pipeline.vendors.live_capture.manifest import CaptureManifestJournal

            CaptureManifestJournal([data_dir]).prepare(path, replacement)
            journal_calls.append("prepare")

        def commit(self, path: Path) -> None:
            raise KeyboardInterrupt  # the operator's Ctrl-C, after the rename

    with pytest.raises(KeyboardInterrupt):
        rotate_tree([first.parent], OLD, NEW, journal=StopAfterRename())
    assert journal_calls == ["prepare"]
    assert _plaintext(first, NEW) == tree[first]
    assert not _manifest_matches_disk(captures)  # pending, not yet committed
    before = sha256_tree(data_dir)

    assert main(["rotate-key", str(data_dir)]) == 0

    out = capsys.readouterr().out
    assert f"  already under the new key: {first}" in out
    assert "3 file(s) rotated, 1 already under the new key" in out
    assert sha256_tree(data_dir)[str(first.relative_to(data_dir))] == before[str(first.relative_to(data_dir))]
    for path, plaintext in tree.items():
        assert _plaintext(path, NEW) == plaintext
    assert _manifest_matches_disk(captures)

    # A third run finds nothing to do and changes nothing.
    after = sha256_tree(data_dir)
    assert main(["rotate-key"]) == 0
    assert "0 file(s) rotated, 4 already under the new key" in capsys.readouterr().out
    assert sha256_tree(data_dir) == after


def test_wrong_old_key_names_the_file_and_replaces_nothing(
    monkeypatch: pytest.MonkeyPatch, data_dir: Path, tree: dict[Path, bytes], capsys: pytest.CaptureFixture[str]
) -> None:
    stranger = data_dir / "exports" / "from-elsewhere.enc"
    _seal(stranger, b"sealed with some other key", OTHER)
    monkeypatch.setenv(crypto.MASTER_KEY_ENV, _b64(OLD))
    monkeypatch.setenv(crypto.NEW_MASTER_KEY_ENV, _b64(NEW))
    before = sha256_tree(data_dir)

    assert main(["rotate-key"]) == EXIT_CRYPTO

    err = capsys.readouterr().err
    assert "1 encrypted file(s) open with neither PIPELINE_MASTER_KEY" in err
    assert f"{stranger.resolve()}: chunk 0 at byte 37 failed authentication" in err
    assert "nothing was replaced" in err
    assert sha256_tree(data_dir) == before

    # The whole tree under a wrong old key: every file is named, nothing changes.
    monkeypatch.setenv(crypto.MASTER_KEY_ENV, _b64(OTHER))
    stranger.unlink()
    before = sha256_tree(data_dir)
    assert main(["rotate-key"]) == EXIT_CRYPTO
    err = capsys.readouterr().err
    assert "4 encrypted file(s) open with neither" in err
    assert all(str(path.resolve()) in err for path in tree)
    assert sha256_tree(data_dir) == before


def test_rotate_key_refuses_a_missing_or_identical_new_key(
    monkeypatch: pytest.MonkeyPatch, data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(crypto.MASTER_KEY_ENV, _b64(OLD))
    assert main(["rotate-key"]) == EXIT_CRYPTO
    assert "PIPELINE_NEW_MASTER_KEY is not set" in capsys.readouterr().err
    monkeypatch.setenv(crypto.NEW_MASTER_KEY_ENV, _b64(OLD))
    assert main(["rotate-key"]) == EXIT_CRYPTO
    err = capsys.readouterr().err
    assert "PIPELINE_NEW_MASTER_KEY is the same key as PIPELINE_MASTER_KEY" in err
    assert _b64(OLD) not in err


def test_a_file_damaged_past_its_first_chunk_is_named_and_left_as_it_was(keys: None, data_dir: Path) -> None:
    damaged = data_dir / "exports" / "damaged.enc"
    _seal(damaged, os.urandom(5 * CHUNK), OLD)
    raw = bytearray(damaged.read_bytes())
    raw[crypto.HEADER_SIZE + 2 * (CHUNK + crypto.TAG_SIZE) + 5] ^= 1  # inside chunk 2
    damaged.write_bytes(bytes(raw))

    with pytest.raises(crypto.DecryptionError, match=r"damaged\.enc: chunk 2 .* failed authentication"):
        rotate_tree([data_dir], OLD, NEW)
    assert damaged.read_bytes() == bytes(raw)
    assert not [p for p in data_dir.rglob(".*tmp-*")]


# --- alert-test ----------------------------------------------------------------------------------


def test_alert_test_delivers_one_synthetic_alert_with_the_token(
    monkeypatch: pytest.MonkeyPatch,
    data_dir: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="market_pipeline.core.alerts.delivery")
    token = "tok-ROTATED-8b1d0c55e2"
    monkeypatch.setenv("PIPELINE_ALERT_WEBHOOK_TOKEN", token)
    with Receiver() as receiver:
        monkeypatch.setenv("PIPELINE_ALERT_WEBHOOK_URL", receiver.url)
        assert main(["alert-test"]) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["webhook"]["status"] == "delivered"
    assert printed["webhook"]["http_status"] == 200
    (request,) = receiver.requests
    assert request["headers"]["Authorization"] == f"Bearer {token}"
    (payload,) = receiver.payloads()
    assert payload["kind"] == "test" and payload["severity"] == "INFO" and payload["key"] == printed["key"]
    (line,) = (data_dir / "alerts" / "alerts.jsonl").read_text().splitlines()
    assert json.loads(line)["delivery"]["webhook"]["status"] == "delivered"
    assert token not in line
    assert "alert INFO test alert [] -> alerts.jsonl; webhook delivered" in caplog.text


def test_alert_test_reports_a_refused_token_and_a_missing_webhook(
    monkeypatch: pytest.MonkeyPatch, data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["alert-test"]) == EXIT_CONFIGURATION
    assert "PIPELINE_ALERT_WEBHOOK_URL is not set" in capsys.readouterr().err

    monkeypatch.setenv("PIPELINE_ALERTS__WEBHOOK_BACKOFF_SECONDS", "0.01")
    with Receiver(fail_first=99) as receiver:  # answers 503 every time
        monkeypatch.setenv("PIPELINE_ALERT_WEBHOOK_URL", receiver.url)
        assert main(["alert-test"]) == 1
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["webhook"]["status"] == "failed"
    assert printed["webhook"]["http_status"] == 503


def test_the_old_key_may_come_from_dotenv(
    monkeypatch: pytest.MonkeyPatch, data_dir: Path, tree: dict[Path, bytes]
) -> None:
    Path(".env").write_text(f"PIPELINE_MASTER_KEY={_b64(OLD)}\n")  # the services' settings file, in the (empty) cwd
    monkeypatch.setenv(crypto.NEW_MASTER_KEY_ENV, _b64(NEW))
    assert main(["rotate-key"]) == 0
    for path, plaintext in tree.items():
        assert _plaintext(path, NEW) == plaintext


@pytest.fixture
def encrypted_lake() -> Iterator[None]:
    """This test's process reads and writes the lake encrypted, with PIPELINE_MASTER_KEY's lake key."""
    from market_pipeline.core import context

    with context.using(context.CoreContext(lake_encrypted=True)):
        yield


def _encrypted_lake_files(lake: Path) -> dict[Path, object]:
    """A raw table, a checkpoint (uncompressed) and a multi-row-group books file, sealed with OLD's lake
    key (PIPELINE_MASTER_KEY, the environment's, is OLD; `encrypted_lake`) under `lake`; returns path ->
    the pyarrow table it holds."""
    import decimal

    import pyarrow as pa

    from market_pipeline.core.lake import parquet_io

    wide = pa.table(
        {
            "t": pa.array(range(5000), pa.int64()),
            "p": pa.array([decimal.Decimal(i) / 100 for i in range(5000)], pa.decimal64(18, 2)),
        }
    ).replace_schema_metadata({b"market_pipeline": b'{"rows": 5000}'})
    files = {
        lake / "raw/trades/exchange=BINANCE/symbol=BTC-USDT/dt=2024-03-01/data.parquet": wide.slice(0, 10),
        lake / "checkpoints/exchange=BINANCE/symbol=BTC-USDT/dt=2024-03-01/book.parquet": wide.slice(10, 3),
        lake / "books/exchange=BINANCE/symbol=BTC-USDT/dt=2024-03-01/data.parquet": wide,
    }
    for path, table in files.items():
        path.parent.mkdir(parents=True)
        codec = "none" if "checkpoints" in path.parts else "zstd"  # the footer names it UNCOMPRESSED
        with parquet_io.parquet_writer(path, table.schema, compression=codec) as writer:
            for start in range(0, table.num_rows, 2000):  # several row groups
                writer.write_table(table.slice(start, 2000))
    return files


def test_rotate_key_re_encrypts_the_encrypted_lake_and_the_capture_dir(
    keys: None,
    encrypted_lake: None,
    data_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Issue 29, item 2: rotate-key said done while every encrypted lake file (Parquet modular
    encryption, not the capture format) stayed under the old key. Now the lake's raw table, a
    checkpoint, a multi-row-group books file and a capture outside the data dir are all rotated,
    read back the same under the new key only, the pipeline's lake guard accepts the new key, and a
    second run finds everything already rotated."""
    from market_pipeline.core.lake import parquet_io
    from market_pipeline.core.lake.lake_guard import LakeKeyMismatch, check_lake_key

    lake = data_dir / "lake"
    files = _encrypted_lake_files(lake)
    groups = {path: parquet_io.open_file(path).metadata.num_row_groups for path in files}
    captures = tmp_path / "captures"  # PIPELINE_CAPTURE_DIR outside the data dir
    _seal(captures / "binance_spot_btcusdt_20240808.gz.enc", b"capture lines", OLD)
    monkeypatch.setenv("PIPELINE_CAPTURE_DIR", str(captures))

    assert main(["rotate-key"]) == 0
    assert "4 file(s) rotated, 0 already under the new key" in capsys.readouterr().out

    monkeypatch.setenv(crypto.MASTER_KEY_ENV, _b64(NEW))
    for path, table in files.items():
        assert parquet_io.read_table(path).equals(table, check_metadata=True), path
        assert parquet_io.open_file(path).metadata.num_row_groups == groups[path]
    check_lake_key(lake)
    monkeypatch.setenv(crypto.MASTER_KEY_ENV, _b64(OLD))
    for path in files:
        with pytest.raises(parquet_io.LakeDecryptionError):
            parquet_io.read_table(path)
    with pytest.raises(LakeKeyMismatch):
        check_lake_key(lake)
    assert _plaintext(captures / "binance_spot_btcusdt_20240808.gz.enc", NEW) == b"capture lines"
    assert not [p for p in data_dir.rglob(".*tmp-*")]

    before = sha256_tree(lake)  # a re-run (after an interruption, say) rewrites nothing
    assert main(["rotate-key"]) == 0
    assert "0 file(s) rotated, 4 already under the new key" in capsys.readouterr().out
    assert sha256_tree(lake) == before


def test_rotate_key_re_encrypts_a_remote_lake_in_its_bucket(
    keys: None,
    encrypted_lake: None,
    data_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """With PIPELINE_LAKE_URL the lake's objects are rotated in the bucket (each a verified copy
    uploaded in one PUT), the local data dir's files too; under the new key only they read back the
    same, and nothing is left in the upload directory."""
    from market_pipeline.core.lake import parquet_io, storage
    from market_pipeline.core.lake.lake_guard import LakeKeyMismatch, check_lake_key
    from market_pipeline_tests.support.s3_server import REGION, LoopbackS3

    server = LoopbackS3()
    try:
        server.create_bucket("rotated-lake")
        for name, value in {
            "AWS_ACCESS_KEY_ID": "lake-writer",
            "AWS_SECRET_ACCESS_KEY": "lake-secret",
            "AWS_REGION": REGION,
            "AWS_ENDPOINT_URL": server.url,
            "PIPELINE_LAKE_URL": "s3://rotated-lake/team/lake",
        }.items():
            monkeypatch.setenv(name, value)
        storage.s3_filesystem.cache_clear()  # this test's endpoint
        storage._s3_client.cache_clear()
        staged = tmp_path / "staged"
        tables = _encrypted_lake_files(staged)
        server.upload_tree("rotated-lake", "team/lake", staged)
        root = storage.lake_root("s3://rotated-lake/team/lake", tmp_path)
        remote = {root / path.relative_to(staged).as_posix(): table for path, table in tables.items()}
        _seal(data_dir / "exports" / "local.enc", b"a local file", OLD)

        assert main(["rotate-key"]) == 0
        out = capsys.readouterr().out
        assert "4 file(s) rotated, 0 already under the new key" in out, out
        assert "lake-secret" not in out

        monkeypatch.setenv(crypto.MASTER_KEY_ENV, _b64(NEW))
        for path, table in remote.items():
            assert parquet_io.read_table(path).equals(table, check_metadata=True), path
        check_lake_key(root)
        assert _plaintext(data_dir / "exports" / "local.enc", NEW) == b"a local file"
        monkeypatch.setenv(crypto.MASTER_KEY_ENV, _b64(OLD))
        with pytest.raises(LakeKeyMismatch):
            check_lake_key(root)
        uploads = data_dir / "tmp" / "uploads"
        assert not uploads.exists() or not any(uploads.iterdir())
        assert main(["rotate-key"]) == 0
        assert "0 file(s) rotated, 4 already under the new key" in capsys.readouterr().out
    finally:
        storage.s3_filesystem.cache_clear()
        storage._s3_client.cache_clear()
        server.stop()

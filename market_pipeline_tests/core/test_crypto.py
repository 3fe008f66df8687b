"""Encryption at rest: round trips, tamper and truncation detection, keys, the CLI, and captures
read transparently by verify-capture."""

from __future__ import annotations

import base64
import gzip
import json
import os
from pathlib import Path

import pytest

from market_pipeline.cli.main import main
from market_pipeline.core.security import crypto
from market_pipeline.vendors.capture_files import CaptureFormatError, open_capture
from market_pipeline_tests.support.project import REAL_DATA_DIR

REAL = REAL_DATA_DIR
USDM = REAL / "binance_usdm_btcusdt_20240808.gz"
CHUNK = 64  # small chunks make multi-chunk files tiny
RECORD = CHUNK + crypto.TAG_SIZE


@pytest.fixture
def key() -> bytes:
    return os.urandom(32)


@pytest.fixture
def env_key(monkeypatch: pytest.MonkeyPatch, key: bytes) -> bytes:
    monkeypatch.setenv(crypto.MASTER_KEY_ENV, base64.b64encode(key).decode())
    return key


def _sealed(tmp_path: Path, key: bytes, plaintext: bytes, chunk: int = CHUNK) -> Path:
    plain = tmp_path / "plain.bin"
    plain.write_bytes(plaintext)
    target = tmp_path / "sealed.enc"
    crypto.encrypt_file(plain, target, key, chunk_size=chunk)
    return target


def _refused(source: Path, key: bytes, tmp_path: Path) -> str:
    """Decrypting `source` fails, names it, and writes nothing (an existing target is kept)."""
    tmp_path.mkdir(exist_ok=True)
    target = tmp_path / "out.bin"
    target.write_bytes(b"previous good data")
    with pytest.raises(crypto.DecryptionError) as info:
        crypto.decrypt_file(source, target, key)
    assert str(source) in str(info.value)
    assert target.read_bytes() == b"previous good data"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no temp left
    with pytest.raises(crypto.DecryptionError):
        with crypto.open_decrypted(source, key) as reader:
            reader.read()
    return str(info.value)


# --- round trips ---------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK, 3 * CHUNK + 5])
def test_round_trip(tmp_path, key, size):
    plaintext = os.urandom(size)
    sealed = _sealed(tmp_path, key, plaintext)
    chunks = max(1, -(-size // CHUNK))
    assert sealed.stat().st_size == crypto.HEADER_SIZE + size + chunks * crypto.TAG_SIZE
    assert sealed.read_bytes()[: len(crypto.MAGIC)] == crypto.MAGIC
    out = tmp_path / "out.bin"
    assert crypto.decrypt_file(sealed, out, key) == size
    assert out.read_bytes() == plaintext
    assert out.stat().st_mode & 0o777 == 0o600
    with crypto.open_decrypted(sealed, key) as reader:
        assert reader.read() == plaintext


def test_same_plaintext_never_gives_the_same_file(tmp_path, key):
    first = _sealed(tmp_path, key, b"x" * 100).read_bytes()
    second = _sealed(tmp_path, key, b"x" * 100).read_bytes()
    assert first != second  # fresh salt (so key) and nonce prefix per file
    assert first[len(crypto.MAGIC) + 1 : crypto.HEADER_SIZE] != second[len(crypto.MAGIC) + 1 : crypto.HEADER_SIZE]


def test_streaming_writer_chunks_large_writes(tmp_path, key):
    """Writes of any size give the same chunking as one big write (the last chunk may be full)."""
    plaintext = os.urandom(5 * CHUNK)
    target = tmp_path / "stream.enc"
    with open(target, "wb") as sink:
        writer = crypto.EncryptingWriter(sink, key, CHUNK)
        for start in range(0, len(plaintext), 37):
            writer.write(plaintext[start : start + 37])
        writer.close()
    assert target.stat().st_size == crypto.HEADER_SIZE + 5 * RECORD  # no empty trailing chunk
    with crypto.open_decrypted(target, key) as reader:
        assert reader.read() == plaintext


def test_cli_round_trip_with_default_chunks(tmp_path, env_key, capsys):
    plaintext = os.urandom(crypto.CHUNK_SIZE + 12345)  # two chunks of the default 1 MiB
    source = tmp_path / "data.bin"
    source.write_bytes(plaintext)
    assert main(["encrypt", str(source), "-o", str(tmp_path / "data.bin.enc")]) == 0
    assert (tmp_path / "data.bin.enc").stat().st_size == crypto.HEADER_SIZE + len(plaintext) + 2 * crypto.TAG_SIZE
    assert main(["decrypt", str(tmp_path / "data.bin.enc"), "-o", str(tmp_path / "back.bin")]) == 0
    assert (tmp_path / "back.bin").read_bytes() == plaintext
    assert "encrypted" in capsys.readouterr().out


# --- tampering and truncation --------------------------------------------------------------------


def test_flipping_any_byte_is_detected(tmp_path, key):
    """Every byte: magic, version, salt, nonce prefix, chunk size, ciphertext and tags."""
    plaintext = os.urandom(2 * CHUNK + 10)  # three chunks, the last one short
    sealed = _sealed(tmp_path, key, plaintext)
    good = sealed.read_bytes()
    assert len(good) == crypto.HEADER_SIZE + 2 * RECORD + 10 + crypto.TAG_SIZE
    damaged = tmp_path / "damaged.enc"
    for position in range(len(good)):
        data = bytearray(good)
        data[position] ^= 0x01
        damaged.write_bytes(bytes(data))
        _refused(damaged, key, tmp_path / "out")
    messages = {}
    for name, position in (
        ("magic", 0),
        ("version", 8),
        ("chunk size", crypto.HEADER_SIZE - 1),
        ("salt", 10),
        ("tag", len(good) - 1),
        ("middle", crypto.HEADER_SIZE + RECORD + 3),
    ):
        data = bytearray(good)
        data[position] ^= 0x01
        damaged.write_bytes(bytes(data))
        messages[name] = _refused(damaged, key, tmp_path / "out")
    assert "bad magic" in messages["magic"]
    assert "unsupported encryption format version" in messages["version"]
    assert "chunk 0 at byte 37 failed authentication" in messages["salt"]
    assert "chunk 2" in messages["tag"] and "tampered or truncated" in messages["tag"]
    assert "chunk 1" in messages["middle"]


@pytest.mark.parametrize(
    "cut",
    [
        crypto.HEADER_SIZE + RECORD,  # at a chunk boundary: chunk 0 alone was sealed as not final
        crypto.HEADER_SIZE + 2 * RECORD,  # the final chunk missing entirely
        crypto.HEADER_SIZE + RECORD + 40,  # mid-chunk
        crypto.HEADER_SIZE + 2 * RECORD + 5,  # inside the last chunk's tag
        crypto.HEADER_SIZE,  # header only
        20,  # inside the header
    ],
)
def test_truncation_is_detected(tmp_path, key, cut):
    sealed = _sealed(tmp_path, key, os.urandom(2 * CHUNK + 10))
    data = sealed.read_bytes()
    sealed.write_bytes(data[:cut])
    message = _refused(sealed, key, tmp_path / "out")
    assert "truncated" in message


def test_appended_data_is_detected(tmp_path, key):
    sealed = _sealed(tmp_path, key, os.urandom(CHUNK))
    sealed.write_bytes(sealed.read_bytes() + b"\x00" * RECORD)
    _refused(sealed, key, tmp_path / "out")


def test_streaming_reader_yields_only_authenticated_chunks(tmp_path, key):
    plaintext = os.urandom(3 * CHUNK)
    sealed = _sealed(tmp_path, key, plaintext)
    data = bytearray(sealed.read_bytes())
    data[-1] ^= 0x01  # break the last chunk's tag
    sealed.write_bytes(bytes(data))
    received = bytearray()
    with crypto.open_decrypted(sealed, key) as reader:
        with pytest.raises(crypto.DecryptionError, match="chunk 2"):
            while block := reader.read1(7):
                received += block
    assert bytes(received) == plaintext[: 2 * CHUNK]  # the two good chunks, nothing of the third


def test_wrong_key_is_refused(tmp_path, key):
    sealed = _sealed(tmp_path, key, b"secret capture")
    message = _refused(sealed, os.urandom(32), tmp_path / "out")
    assert "wrong PIPELINE_MASTER_KEY" in message


# --- keys ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (None, "is not set"),
        ("   ", "is not set"),
        ("not base64 at all!", "is not valid base64"),
        (base64.b64encode(b"k" * 16).decode(), "decodes to 16 bytes, not 32"),
        (base64.urlsafe_b64encode(b"\xfb\xff" * 16).decode(), "is not valid base64"),
    ],
)
def test_bad_master_keys_are_named_never_echoed(value, reason):
    with pytest.raises(crypto.MasterKeyError) as info:
        crypto.parse_master_key(value)
    message = str(info.value)
    assert message.startswith("PIPELINE_MASTER_KEY ") and reason in message
    if value and value.strip():
        assert value.strip() not in message


def test_cli_without_key_or_with_tampered_file(tmp_path, monkeypatch, capsys):
    source = tmp_path / "data.bin"
    source.write_bytes(b"hello")
    assert main(["encrypt", str(source), "-o", str(tmp_path / "x.enc")]) == 2
    assert "PIPELINE_MASTER_KEY is not set" in capsys.readouterr().err
    assert not (tmp_path / "x.enc").exists()

    secret = base64.b64encode(b"Q" * 31).decode()
    monkeypatch.setenv(crypto.MASTER_KEY_ENV, secret)
    assert main(["encrypt", str(source), "-o", str(tmp_path / "x.enc")]) == 2
    err = capsys.readouterr().err
    assert "PIPELINE_MASTER_KEY decodes to 31 bytes" in err and secret not in err

    monkeypatch.setenv(crypto.MASTER_KEY_ENV, base64.b64encode(os.urandom(32)).decode())
    assert main(["encrypt", str(source), "-o", str(tmp_path / "x.enc")]) == 0
    data = bytearray((tmp_path / "x.enc").read_bytes())
    data[-3] ^= 0x80
    (tmp_path / "x.enc").write_bytes(bytes(data))
    assert main(["decrypt", str(tmp_path / "x.enc"), "-o", str(tmp_path / "y.bin")]) == 1
    err = capsys.readouterr().err
    assert f"{tmp_path / 'x.enc'}: chunk 0 at byte 37 failed authentication" in err
    assert f"{tmp_path / 'y.bin'} was not written" in err
    assert not (tmp_path / "y.bin").exists()


# --- captures read transparently -------------------------------------------------------------------


def _verify(capsys, *files: Path) -> tuple[int, str]:
    capsys.readouterr()
    code = main(["verify-capture", *map(str, files)])
    captured = capsys.readouterr()
    return code, captured.out.strip() or captured.err.strip()


@pytest.mark.skipif(not USDM.is_file(), reason=f"shared capture {USDM} is absent")
def test_verify_capture_reads_encrypted_copies_identically(tmp_path, env_key, capsys):
    plain_code, plain = _verify(capsys, USDM)
    assert plain_code == 0 and json.loads(plain)["applied"] == 6_547

    named = tmp_path / "binance_usdm_btcusdt_20240808.gz.enc"
    crypto.encrypt_file(USDM, named, env_key)
    assert named.stat().st_size > 3 * crypto.CHUNK_SIZE  # several chunks
    assert _verify(capsys, named) == (0, plain)


@pytest.mark.skipif(not USDM.is_file(), reason=f"shared capture {USDM} is absent")
def test_encrypted_capture_is_recognised_by_header_and_checked_chunk_by_chunk(tmp_path, env_key, capsys):
    with gzip.open(USDM, "rb") as fh:
        head = b"".join(fh.readline() for _ in range(3_000))
    small = tmp_path / "plain" / "binance_usdm_btcusdt_20240808.gz"
    small.parent.mkdir()
    small.write_bytes(gzip.compress(head))
    plain_code, plain = _verify(capsys, small)
    assert plain_code == 0 and json.loads(plain)["ticker_checks"] > 0

    # An encrypted file still called .gz reads the same: the header decides, not the name.
    disguised = tmp_path / "binance_usdm_btcusdt_20240808.gz"
    crypto.encrypt_file(small, disguised, env_key, chunk_size=4096)
    assert _verify(capsys, disguised) == (0, plain)

    data = bytearray(disguised.read_bytes())
    data[crypto.HEADER_SIZE + 2 * (4096 + crypto.TAG_SIZE) + 100] ^= 0x01  # in chunk 2
    disguised.write_bytes(bytes(data))
    code, err = _verify(capsys, disguised)
    assert code == 1
    assert str(disguised) in err and "chunk 2" in err and "failed authentication" in err


def test_open_capture_on_encrypted_files(tmp_path, monkeypatch, key):
    text = b"1 {}\n2 {}\n"
    compressed = tmp_path / "c.gz"
    compressed.write_bytes(gzip.compress(text))
    sealed_gzip = tmp_path / "c.gz.enc"
    crypto.encrypt_file(compressed, sealed_gzip, key)
    raw = tmp_path / "c.txt"
    raw.write_bytes(text)
    sealed_text = tmp_path / "c.txt.enc"
    crypto.encrypt_file(raw, sealed_text, key)

    with pytest.raises(CaptureFormatError, match="PIPELINE_MASTER_KEY is not set"):
        open_capture(sealed_gzip)
    monkeypatch.setenv(crypto.MASTER_KEY_ENV, base64.b64encode(key).decode())
    for path in (sealed_gzip, sealed_text):
        with open_capture(path) as stream:
            assert stream.read() == text
    monkeypatch.setenv(crypto.MASTER_KEY_ENV, base64.b64encode(os.urandom(32)).decode())
    with pytest.raises(CaptureFormatError, match=r"c\.gz\.enc: chunk 0 .*wrong PIPELINE_MASTER_KEY"):
        open_capture(sealed_gzip)

"""Encryption at rest: AES-256-GCM in authenticated chunks, per-file keys from PIPELINE_MASTER_KEY.

File layout (all integers big-endian)::

    header  = MAGIC (8) | version (1) | salt (16) | nonce prefix (8) | chunk size (4)
    chunk i = AES-256-GCM(plaintext[i*size : (i+1)*size]) | tag (16)

* The file key is HKDF-SHA256(master key, salt, INFO): a fresh random salt per file, so no two
  files share a key and the master key never touches data directly.
* Chunk i is sealed with nonce = prefix | i (4 bytes) and AAD = header | final flag (1 byte). The
  header in the AAD makes any header edit fail; the counter in the nonce makes reordering or
  dropping chunks fail; the final flag makes a cut at a chunk boundary fail (the new last chunk
  was sealed as "not final"), and data appended after the final chunk fail too.
* Every file holds at least one chunk: an empty plaintext is one final chunk of just a tag.
* Memory stays flat: one chunk (1 MiB by default) is held at a time, whatever the file size.
* Readers never hand out plaintext that has not authenticated: each chunk is checked before it
  is yielded, and a file is decrypted into a temporary file renamed only once every chunk passed.
"""

from __future__ import annotations

import base64
import binascii
import io
import os
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from market_pipeline.core import context
from market_pipeline.core.errors import CryptoError
from market_pipeline.core.lake.files import atomic_path

MASTER_KEY_ENV = "PIPELINE_MASTER_KEY"
NEW_MASTER_KEY_ENV = "PIPELINE_NEW_MASTER_KEY"  # the key `rotate-key` re-encrypts to
MASTER_KEY_BYTES = 32

# PNG-style magic: a non-ASCII first byte (never read as text) and CR LF / ^Z / LF, which
# line-ending conversion or a text-mode copy would mangle, so damage shows up as "bad magic".
MAGIC = b"\x89MPE\r\n\x1a\n"
VERSION = 1
_HEADER = struct.Struct(">8sB16s8sI")
HEADER_SIZE = _HEADER.size  # 37
SALT_SIZE = 16
NONCE_PREFIX_SIZE = 8
TAG_SIZE = 16
CHUNK_SIZE = 1 << 20
MAX_CHUNK_SIZE = 64 << 20  # bounds the memory a crafted header could make a reader allocate
MAX_CHUNKS = 1 << 32  # the counter is 4 bytes of the 12-byte nonce
_INFO = b"market_pipeline/file-encryption/v1"
_NOT_FINAL, _FINAL = b"\x00", b"\x01"

KEY_HELP = (
    f"{MASTER_KEY_ENV} must be the base64 encoding of exactly {MASTER_KEY_BYTES} random bytes; "
    'make one with: python -c "import base64, os; print(base64.b64encode(os.urandom(32)).decode())"'
)


class MasterKeyError(CryptoError, ValueError):
    """PIPELINE_MASTER_KEY is missing or malformed. The message never contains the value."""


class DecryptionError(CryptoError, OSError):
    """An encrypted file that cannot be trusted: bad header, tampered, truncated or wrong key.

    An OSError like gzip's BadGzipFile, so readers that report unreadable files handle it too.
    """

    def __init__(self, path: Path | str, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{path}: {reason}")


# --- keys --------------------------------------------------------------------------------------


def parse_master_key(text: str | None, variable: str = MASTER_KEY_ENV) -> bytes:
    """The 32 key bytes from a master key's base64 text; MasterKeyError naming `variable` otherwise."""
    help_text = KEY_HELP.replace(MASTER_KEY_ENV, variable)
    if text is None or not text.strip():
        raise MasterKeyError(f"{variable} is not set. {help_text}")
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise MasterKeyError(f"{variable} is not valid base64. {help_text}") from None
    if len(raw) != MASTER_KEY_BYTES:
        raise MasterKeyError(f"{variable} decodes to {len(raw)} bytes, not {MASTER_KEY_BYTES}. {help_text}")
    return raw


def default_master_key() -> bytes:
    """The master key: PIPELINE_MASTER_KEY from the environment when set, else the settings' (the
    core context's, `core/context.py`); MasterKeyError when neither is set or the value is malformed."""
    text = os.environ.get(MASTER_KEY_ENV)
    return parse_master_key(text if text and text.strip() else context.current().master_key)


def derive_key(master_key: bytes, salt: bytes | None, info: bytes) -> bytes:
    """A 32-byte AES key: HKDF-SHA256 of the master key, for one purpose (`info`) and `salt`."""
    if len(master_key) != MASTER_KEY_BYTES:
        raise MasterKeyError(f"the master key must be {MASTER_KEY_BYTES} bytes, got {len(master_key)}")
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=info).derive(master_key)


def _file_key(master_key: bytes, salt: bytes) -> AESGCM:
    return AESGCM(derive_key(master_key, salt, _INFO))


def _nonce(prefix: bytes, counter: int) -> bytes:
    return prefix + counter.to_bytes(4, "big")


def is_encrypted(head: bytes) -> bool:
    """Whether the first bytes of a file are this format's magic."""
    return head[: len(MAGIC)] == MAGIC


# --- encryption --------------------------------------------------------------------------------


class EncryptingWriter(io.RawIOBase):
    """A write-only stream that seals what is written to it into `sink`, chunk by chunk.

    A full chunk is held back until more data arrives, because only `close()` knows which chunk
    is the final one. `close()` seals the final chunk; it does not close `sink`.
    """

    def __init__(self, sink: BinaryIO, master_key: bytes, chunk_size: int = CHUNK_SIZE) -> None:
        super().__init__()
        if not 1 <= chunk_size <= MAX_CHUNK_SIZE:
            raise ValueError(f"chunk size must be in 1..{MAX_CHUNK_SIZE}, got {chunk_size}")
        salt = os.urandom(SALT_SIZE)
        self._prefix = os.urandom(NONCE_PREFIX_SIZE)
        self._header = _HEADER.pack(MAGIC, VERSION, salt, self._prefix, chunk_size)
        self._aead = _file_key(master_key, salt)
        self._sink = sink
        self._chunk_size = chunk_size
        self._pending = bytearray()
        self._counter = 0
        sink.write(self._header)

    def writable(self) -> bool:
        return True

    def write(self, data: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        if self.closed:
            raise ValueError("write to a closed EncryptingWriter")
        self._pending += data
        size = self._chunk_size
        if len(self._pending) > size:
            # Seal every full chunk but keep at least one byte back: it may belong to the last.
            whole = (len(self._pending) - 1) // size * size
            for start in range(0, whole, size):
                self._seal(self._pending[start : start + size], final=False)
            del self._pending[:whole]
        return len(data)

    def _seal(self, plaintext: bytes | bytearray, final: bool) -> None:
        if self._counter >= MAX_CHUNKS:
            raise ValueError("file too large for one chunk counter; use a larger chunk size")
        aad = self._header + (_FINAL if final else _NOT_FINAL)
        self._sink.write(self._aead.encrypt(_nonce(self._prefix, self._counter), bytes(plaintext), aad))
        self._counter += 1

    def close(self) -> None:
        # The sink may already be gone when an abandoned writer is garbage collected.
        if not self.closed and not self._sink.closed:
            self._seal(self._pending, final=True)
            self._pending = bytearray()
        super().close()


# --- decryption --------------------------------------------------------------------------------


def decrypt_chunks(source: BinaryIO, master_key: bytes, name: Path | str) -> Iterator[bytes]:
    """Yield the plaintext of each chunk of `source`, each only after it authenticated.

    Raises DecryptionError naming `name` on a bad header, a chunk that fails authentication
    (tampered, truncated or wrong key) or a missing final chunk.
    """
    header = source.read(HEADER_SIZE)
    if len(header) < HEADER_SIZE or not is_encrypted(header):
        if is_encrypted(header):
            raise DecryptionError(name, "truncated: the encryption header is incomplete")
        raise DecryptionError(name, "not an encrypted file (bad magic bytes)")
    _, version, salt, prefix, chunk_size = _HEADER.unpack(header)
    if version != VERSION:
        raise DecryptionError(name, f"unsupported encryption format version {version} (this reader knows {VERSION})")
    if not 1 <= chunk_size <= MAX_CHUNK_SIZE:
        raise DecryptionError(name, f"corrupt header: chunk size {chunk_size} out of range")
    aead = _file_key(master_key, salt)
    record_size = chunk_size + TAG_SIZE
    record = source.read(record_size)
    counter = 0
    while True:
        # A full record may be followed by more: look ahead one record to know if it is the last.
        following = source.read(record_size) if len(record) == record_size else b""
        final = not following
        offset = HEADER_SIZE + counter * record_size
        if len(record) < TAG_SIZE:
            raise DecryptionError(name, f"truncated: chunk {counter} at byte {offset} is incomplete")
        try:
            plaintext = aead.decrypt(_nonce(prefix, counter), record, header + (_FINAL if final else _NOT_FINAL))
        except InvalidTag:
            cause = (
                f"wrong {MASTER_KEY_ENV}, or the file is tampered or truncated"
                if counter == 0
                else "the file is tampered or truncated"
            )
            raise DecryptionError(name, f"chunk {counter} at byte {offset} failed authentication ({cause})") from None
        yield plaintext
        if final:
            return
        record = following
        counter += 1


class DecryptingReader(io.RawIOBase):
    """A read-only stream of an encrypted file's authenticated plaintext (see decrypt_chunks)."""

    def __init__(self, path: Path, master_key: bytes) -> None:
        super().__init__()
        self._file = open(path, "rb")  # noqa: SIM115 - closed in close()
        self._chunks = decrypt_chunks(self._file, master_key, path)
        self._buffer = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, target: bytearray | memoryview) -> int:  # type: ignore[override]
        while not self._buffer:
            chunk = next(self._chunks, None)
            if chunk is None:
                return 0
            self._buffer = memoryview(chunk)
        n = min(len(target), len(self._buffer))
        target[:n] = self._buffer[:n]
        self._buffer = self._buffer[n:]
        return n

    def close(self) -> None:
        if not self.closed:
            self._chunks.close()
            self._file.close()
        super().close()


def open_decrypted(path: Path, master_key: bytes | None = None) -> io.BufferedReader:
    """A buffered binary reader of `path`'s plaintext; the key defaults to `default_master_key()`."""
    key = default_master_key() if master_key is None else master_key
    return io.BufferedReader(DecryptingReader(Path(path), key), buffer_size=CHUNK_SIZE)


# --- whole files -------------------------------------------------------------------------------


def _open_private(path: Path) -> BinaryIO:
    """Create `path` for writing, readable by the owner only (it may hold plaintext)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    return os.fdopen(fd, "wb")


def encrypt_file(source: Path, target: Path, master_key: bytes, chunk_size: int = CHUNK_SIZE) -> int:
    """Encrypt `source` into `target` atomically; returns the bytes written."""
    with atomic_path(target) as tmp, open(source, "rb") as plain, _open_private(tmp) as sealed:
        writer = EncryptingWriter(sealed, master_key, chunk_size)
        while block := plain.read(chunk_size):
            writer.write(block)
        writer.close()
    return target.stat().st_size


def decrypt_file(source: Path, target: Path, master_key: bytes) -> int:
    """Decrypt `source` into `target`; `target` appears only if every chunk authenticated.

    On failure the temporary file is removed and an existing `target` is left untouched.
    """
    with atomic_path(target) as tmp, open(source, "rb") as sealed, _open_private(tmp) as plain:
        for chunk in decrypt_chunks(sealed, master_key, source):
            plain.write(chunk)
    return target.stat().st_size

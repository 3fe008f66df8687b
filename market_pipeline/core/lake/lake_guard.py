"""Before a process writes the lake: does its key open the lake, and does its setting match it?

A run with another PIPELINE_MASTER_KEY used to fail only after it had rewritten the day's files
under that key (unreadable with the lake's own key from then on), and a run with
PIPELINE_LAKE_ENCRYPTION=off wrote plaintext files into an encrypted lake. `check_lake_key` reads
one file the pipeline wrote (any table but the quarantine, which holds vendor files byte for byte,
and a DuckLake warehouse's data files, each under a key of its own)
and refuses, naming it, when
- the file is encrypted (magic `PARE`) and this process would write plaintext, or the reverse;
- the file is encrypted and this process's lake key does not open its footer.
A lake without files yet accepts either setting. Each process checks once per lake directory.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq

from market_pipeline.core.errors import CryptoError
from market_pipeline.core.lake import parquet_io, storage
from market_pipeline.core.lake.paths import quarantine_dir
from market_pipeline.core.lake.warehouse import DATA_DIRECTORY

ENCRYPTED_MAGIC = b"PARE"
_checked: set[tuple[Path, bytes | None]] = set()  # (lake dir, lake key or None when writing plaintext)


class LakeKeyMismatch(CryptoError):
    """The lake was written with another key or another encryption setting than this process's."""


def sample_lake_file(lake_dir: Path) -> Path | None:
    """One Parquet file the pipeline wrote under `lake_dir` with the lake key, or None. Left out: the
    quarantine (vendor files byte for byte) and a DuckLake warehouse's data files (a key of their own each)."""
    skip = (str(quarantine_dir(lake_dir)) + "/", str(lake_dir / DATA_DIRECTORY) + "/")
    for path in storage.iter_files(lake_dir):
        if path.name.endswith(".parquet") and not path.name.startswith(".") and not str(path).startswith(skip):
            return path  # type: ignore[return-value]
    return None


def check_lake_key(lake_dir: Path) -> None:
    """Raise LakeKeyMismatch when this process's lake encryption and key do not fit the lake's files."""
    encrypt = parquet_io.lake_encrypted()
    checked = (lake_dir, parquet_io.lake_key() if encrypt else None)
    if checked in _checked:
        return
    sample = sample_lake_file(lake_dir)
    if sample is not None:
        with sample.open("rb") as fh:
            encrypted = fh.read(4) == ENCRYPTED_MAGIC
        if encrypted and not encrypt:
            raise LakeKeyMismatch(
                f"{sample} is encrypted but PIPELINE_LAKE_ENCRYPTION is off: a run would write plaintext files "
                "into the encrypted lake; set PIPELINE_LAKE_ENCRYPTION=on with the lake's PIPELINE_MASTER_KEY"
            )
        if encrypt and not encrypted:
            raise LakeKeyMismatch(
                f"{sample} is not encrypted but PIPELINE_LAKE_ENCRYPTION is on: a run would mix encrypted files "
                "into a plaintext lake; set PIPELINE_LAKE_ENCRYPTION=off, or start the encrypted lake in an "
                "empty PIPELINE_DATA_DIR (docs/security.md, Lake encryption)"
            )
        if encrypted:
            try:
                fs, where = storage.arrow_location(sample)
                pq.read_metadata(where, decryption_properties=parquet_io.decryption_properties(), filesystem=fs)
            except OSError as exc:
                raise LakeKeyMismatch(
                    f"PIPELINE_MASTER_KEY does not open the lake: {sample} was written with another key ({exc}); "
                    "nothing was written"
                ) from None
    _checked.add(checked)

"""Capture lines into hourly gzip files, optionally encrypted, each recorded in the manifest.

Layout: ``OUT/{YYYYMMDD}T{HH}/{exchange}_{market}_{symbol}_{YYYYMMDD}.gz`` (``.gz.enc`` when
encrypted), one directory per UTC hour of the receive time. The file name is the shared
captures' convention, so tools that read the market, symbol and day from the name keep working;
a second run within the same hour gets ``T{HH}-2`` (existing files are never overwritten).

A file is written as ``<name>.partial`` and renamed when its hour is over (or the capture stops),
then hashed into the manifest. With encryption the gzip stream goes straight into the
authenticated-chunk writer: no plaintext reaches the disk.
"""

from __future__ import annotations

import datetime as dt
import gzip
import os
from pathlib import Path
from typing import BinaryIO

from market_pipeline.core.lake.files import PRIVATE_FILE_MODE
from market_pipeline.core.lake.paths import make_private_dirs
from market_pipeline.core.security.crypto import EncryptingWriter
from market_pipeline.vendors.live_capture.manifest import Manifest

NS_PER_SECOND = 1_000_000_000
NS_PER_HOUR = 3_600 * NS_PER_SECOND
PARTIAL_SUFFIX = ".partial"


class _HourFile:
    """One open output file: raw file <- [encryption] <- gzip."""

    def __init__(self, path: Path, master_key: bytes | None) -> None:
        self.path = path
        self.partial = path.with_name(path.name + PARTIAL_SUFFIX)
        make_private_dirs(path.parent)
        fd = os.open(self.partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE_MODE)
        self.raw: BinaryIO = os.fdopen(fd, "wb")
        self.sealed = EncryptingWriter(self.raw, master_key) if master_key is not None else None
        self.gzip = gzip.GzipFile(filename="", mode="wb", fileobj=self.sealed or self.raw)
        self.lines = 0
        self.first_ns = 0
        self.last_ns = 0

    def write(self, recv_ns: int, line: str) -> None:
        self.gzip.write(f"{recv_ns} {line}\n".encode())
        if not self.lines:
            self.first_ns = recv_ns
        self.last_ns = recv_ns
        self.lines += 1

    def finish(self) -> None:
        self.gzip.close()
        if self.sealed is not None:
            self.sealed.close()
        self.raw.flush()
        os.fsync(self.raw.fileno())
        self.raw.close()
        os.replace(self.partial, self.path)


class HourlyCaptureWriter:
    """Routes `<receive ns> <json>` lines to the file of their UTC hour."""

    def __init__(
        self,
        out_dir: Path,
        market: str,
        symbol: str,
        manifest: Manifest,
        master_key: bytes | None,
        exchange: str = "binance",
    ) -> None:
        self.out_dir = out_dir
        self.stem = f"{exchange}_{market}_{symbol.lower()}"
        self.manifest = manifest
        self.master_key = master_key
        self.current: _HourFile | None = None
        self.hour: int | None = None
        self.files: list[dict] = []
        self.lines = 0

    def _path_for(self, hour: int) -> Path:
        start = dt.datetime.fromtimestamp(hour * 3_600, dt.UTC)
        suffix = ".gz.enc" if self.master_key is not None else ".gz"
        name = f"{self.stem}_{start:%Y%m%d}{suffix}"
        base = f"{start:%Y%m%d}T{start:%H}"
        taken = self.manifest.taken_paths()
        for n in range(1, 10_000):
            directory = self.out_dir / (base if n == 1 else f"{base}-{n}")
            path = directory / name
            partial = path.with_name(path.name + PARTIAL_SUFFIX)
            if not path.exists() and not partial.exists() and path.relative_to(self.out_dir).as_posix() not in taken:
                return path
        raise FileExistsError(f"no free file name for hour {base} under {self.out_dir}")

    def write(self, recv_ns: int, line: str) -> bool:
        """Append one line; True when it opened a new file (a new hour began)."""
        hour = recv_ns // NS_PER_HOUR
        opened = False
        if hour != self.hour or self.current is None:
            self._finish_current()
            self.current = _HourFile(self._path_for(hour), self.master_key)
            self.hour = hour
            opened = True
        self.current.write(recv_ns, line)
        self.lines += 1
        return opened

    def _finish_current(self) -> None:
        current, self.current = self.current, None
        if current is None:
            return
        current.finish()
        self.files.append(self.manifest.add_file(current.path, current.lines, current.first_ns, current.last_ns))

    def close(self) -> None:
        self._finish_current()

"""The first lines of a real capture, written as capture files: the small world in which the tests
prove that a result does not depend on a chunk or batch size.

Tiny chunks and batches cost a fixed overhead each (polars frames, a kernel call), so a tiny size
over a whole capture pays thousands of times for the same kind of cut. The first few thousand
lines of a capture hold every kind of cut those tests are about: the REST snapshot and the diffs
buffered for it, every kind of line on either side of a chunk end, messages cut by batch ends,
ticker checks across batches; and, shifted in time, midnight.
"""

from __future__ import annotations

import gzip
from collections.abc import Sequence
from itertools import islice
from pathlib import Path

from market_pipeline_tests.support.midnight_capture import midnight_shift, shifted_lines


def _lines(path: Path, count: int | None = None) -> list[str]:
    with gzip.open(path, "rt", encoding="utf-8") as stream:
        return list(islice(stream, count))


def _write(path: Path, lines: Sequence[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt", encoding="utf-8", compresslevel=1) as out:
        out.writelines(lines)
    return path


def capture_prefix(paths: Sequence[Path], target: Path, lines: int) -> list[Path]:
    """The first `lines` lines of the capture (its files in order), under the files' own names;
    the files past the prefix are left out."""
    written, left = [], lines
    for path in paths:
        if left <= 0:
            break
        part = _lines(path, left)
        left -= len(part)
        written.append(_write(target / path.name, part))
    return written


def file_prefixes(paths: Sequence[Path], target: Path, lines: int) -> list[Path]:
    """The first `lines` lines of each file of the capture, under its own name: a pair of daily
    files stays a pair across the same midnight (the update-id chain breaks there)."""
    return [_write(target / path.name, _lines(path, lines)) for path in paths]


def snapshot_index(path: Path) -> int:
    """The 0-based index of the first REST snapshot line of a capture file."""
    with gzip.open(path, "rt", encoding="utf-8") as stream:
        return next(i for i, line in enumerate(stream) if '"lastUpdateId"' in line)


def shifted_prefix(path: Path, target: Path, lines: int, midnight_before: int) -> Path:
    """The first `lines` lines of one capture file, every receive time shifted by one amount so
    that midnight (2024-08-09 UTC) falls halfway between line `midnight_before` (0-based) and the
    line before it. Line order, and so an exact replay, is unchanged."""
    part = _lines(path, lines)
    assert 0 < midnight_before < len(part)
    return _write(target / path.name, shifted_lines(part, midnight_shift(part, midnight_before)))

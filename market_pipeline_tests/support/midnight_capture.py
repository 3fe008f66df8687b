"""The shared real spot capture with its receive times shifted so that its REST snapshot falls just
after midnight, and a day's capture tables written as Parquet files."""

from __future__ import annotations

import datetime as dt
import gzip
from pathlib import Path

MIDNIGHT = int(dt.datetime(2024, 8, 9, tzinfo=dt.UTC).timestamp()) * 10**9
DEPTH = 10


def shifted_capture(paths: list[Path], target: Path) -> int:
    """Copy the capture with every receive time shifted by one amount, so that midnight falls
    halfway between the REST snapshot line and the line before it; returns the shift (ns).

    The shared spot capture has one REST snapshot, written a few diffs after the diffs that
    bracket its lastUpdateId, a few seconds after the capture starts at 23:54:13. Shifted by
    about +5 m 47 s, those first lines (diffs never synced, waiting for the snapshot) stay
    before midnight and the snapshot and everything after fall on the next day. Line order,
    and so an exact replay of the whole capture, is unchanged.
    """
    files = [gzip.open(path, "rt", encoding="utf-8").read().splitlines(keepends=True) for path in paths]
    lines = [line for file in files for line in file]
    shift = midnight_shift(lines, next(i for i, line in enumerate(lines) if '"lastUpdateId"' in line))
    target.mkdir()
    for path, file in zip(paths, files, strict=True):
        with gzip.open(target / path.name, "wt", encoding="utf-8", compresslevel=1) as out:
            out.writelines(shifted_lines(file, shift))
    return shift


def midnight_shift(lines: list[str], index: int) -> int:
    """The shift (ns) of every receive time that puts midnight halfway between capture line
    `index` (0-based) and the line before it."""
    before, at = (int(lines[i].split(" ", 1)[0]) for i in (index - 1, index))
    assert before < at
    return MIDNIGHT - (before + at) // 2


def shifted_lines(lines: list[str], shift: int) -> list[str]:
    """Capture lines with their receive times (the first field) shifted by `shift` ns."""
    return [f"{int(t) + shift} {rest}" for t, rest in (line.split(" ", 1) for line in lines)]


def write_day_tables(tables, day: dt.date, root: Path) -> dict[str, Path]:
    paths = {}
    for name in ("book_delta_v2", "depth_snapshot", "book_ticker", "book", "trades"):
        paths[name] = root / str(day) / f"{name}.parquet"
        paths[name].parent.mkdir(parents=True, exist_ok=True)
        getattr(tables, name).write_parquet(paths[name])
    return paths

"""numba's on-disk cache of compiled kernels, in a directory named after the kernels' sources.

numba (`cache=True`) finds a kernel's machine code by the timestamp and size of the one file that
defines it. It does not look at the files of the jitted functions the kernel calls or inlines:
after `core/book/ladder.py` changes, `delta_replay.replay_lake_batch` keeps loading the machine
code compiled with the old ladder inside (seen here: an inlining change to `ladder.top_levels`
had no effect until the cache was deleted). A kernel running old rules would write wrong books
without a sign, so every process of the package points numba at
`<NUMBA_CACHE_DIR or ~/.cache/market_pipeline/numba>/market_pipeline-<fingerprint>`, the
fingerprint a hash of every package source file that uses numba. Changing any of them starts an
empty cache: the kernels compile once more, then later processes load them. Directories of
other fingerprints are left for the user to delete (docs/operations.md).

`market_pipeline/__init__.py` calls `use_kernel_cache()` before anything imports a kernel module;
worker processes inherit the directory through the environment.
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
DEFAULT_BASE = Path("~/.cache/market_pipeline/numba")
# numba compiles into a kernel the jitted functions it calls, which live in files that name numba,
# and the module globals it reads, which today all come from such files too (a kernel reading a
# constant from a file that never names numba would escape the fingerprint).
_MARK = b"numba"


def kernel_fingerprint(package_dir: Path = PACKAGE_DIR) -> str:
    """A hash of the relative path and contents of every .py file under `package_dir` that names numba."""
    digest = hashlib.sha256()
    for path in sorted(package_dir.rglob("*.py")):
        source = path.read_bytes()
        if _MARK in source:
            digest.update(path.relative_to(package_dir).as_posix().encode() + b"\0" + source + b"\0")
    return digest.hexdigest()[:16]


def use_kernel_cache() -> Path:
    """Point numba, in this process and its children, at the cache directory of these sources."""
    base = Path(os.environ.get("NUMBA_CACHE_DIR") or DEFAULT_BASE).expanduser()
    if base.name.startswith("market_pipeline-"):
        base = base.parent  # inherited from a parent process: the same sources
    directory = base / f"market_pipeline-{kernel_fingerprint()}"
    os.environ["NUMBA_CACHE_DIR"] = str(directory)
    config = sys.modules.get("numba.core.config")
    if config is not None:  # numba was imported first: it has read the environment already
        config.CACHE_DIR = str(directory)
    return directory

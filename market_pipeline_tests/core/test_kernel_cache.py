"""numba's kernel cache is keyed by the kernels' sources (market_pipeline/kernel_cache.py): a kernel
compiled against an older callee in another file is never loaded again."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from market_pipeline.kernel_cache import PACKAGE_DIR, kernel_fingerprint

# Compiles one small kernel in a fresh interpreter and says where numba put its cache files.
_COMPILE = """
import os, sys
{first}
import numpy as np
from market_pipeline.core.book.fixed_point import to_steps
to_steps(np.array([1.0, 2.5]), 0.5, np.empty(1, np.int64), 1)
print(os.environ["NUMBA_CACHE_DIR"])
"""


def test_fingerprint_follows_the_sources_that_use_numba(tmp_path):
    kernels = tmp_path / "core" / "kernels.py"
    kernels.parent.mkdir()
    kernels.write_text("import numba\n\n@numba.njit(cache=True)\ndef f(x):\n    return x + 1\n")
    plain = tmp_path / "plain.py"
    plain.write_text("X = 1\n")
    first = kernel_fingerprint(tmp_path)
    plain.write_text("X = 2\n")
    assert kernel_fingerprint(tmp_path) == first  # no kernel there: the compiled code still holds
    kernels.write_text(kernels.read_text().replace("x + 1", "x + 2"))
    assert kernel_fingerprint(tmp_path) != first
    assert kernel_fingerprint(PACKAGE_DIR) == kernel_fingerprint()


@pytest.mark.parametrize("numba_first", [False, True], ids=["package_first", "numba_first"])
def test_kernels_are_cached_under_the_fingerprint(tmp_path, numba_first):
    """Also when numba was imported (and read its environment) before the package."""
    env = {"NUMBA_CACHE_DIR": str(tmp_path), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    script = _COMPILE.format(first="import numba" if numba_first else "")
    out = subprocess.run(
        [sys.executable, "-c", script], env=env, cwd=PACKAGE_DIR.parent, capture_output=True, text=True, check=True
    )
    directory = tmp_path / f"market_pipeline-{kernel_fingerprint()}"
    assert Path(out.stdout.strip()) == directory
    cached = [p.name for p in directory.rglob("*.nbi")]
    assert any(name.startswith("fixed_point.steps_into") for name in cached), cached
    assert not list(tmp_path.glob("*.nbi")) and list(tmp_path.iterdir()) == [directory]

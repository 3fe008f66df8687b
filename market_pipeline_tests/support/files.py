"""Files compared by content, and trees kept pristine for the tests that change them."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path


def sha256_tree(root: Path) -> dict[str, str]:
    """sha256 of every file under root, keyed by relative path."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _pristine(path: Path) -> Path:
    return path.with_name(path.name + ".pristine")


def keep_pristine(path: Path) -> None:
    """A copy of the tree at `path` beside it, which restore_pristine puts back."""
    shutil.copytree(path, _pristine(path), symlinks=True)


def restore_pristine(path: Path) -> None:
    """The tree at `path` as keep_pristine copied it, at the same path (a test may have changed it)."""
    shutil.rmtree(path)
    shutil.copytree(_pristine(path), path, symlinks=True)

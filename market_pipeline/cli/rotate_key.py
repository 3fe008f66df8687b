"""`market-pipeline rotate-key [DIR ...]`: re-encrypt every encrypted file from the old master key
(PIPELINE_MASTER_KEY) to the new one (PIPELINE_NEW_MASTER_KEY); core/security/key_rotation.py."""

from __future__ import annotations

import os
from pathlib import Path

from market_pipeline.cli.common import EXIT_OK, EXIT_USAGE, CliError


def rotate_key_command(dirs: list[Path]) -> int:
    from market_pipeline.core.lake import storage
    from market_pipeline.core.security import crypto
    from market_pipeline.core.security.key_rotation import rotate_tree
    from market_pipeline.settings import load_settings
    from market_pipeline.vendors.live_capture.manifest import CaptureManifestJournal

    settings = load_settings()
    # By default every place the pipeline writes encrypted files: the data dir (lake, checkpoints,
    # carry files, captures kept there), the capture directory when it lies elsewhere, and the
    # bucket of a remote lake (PIPELINE_LAKE_URL).
    captures = settings.capture_dir
    local_roots = dirs or [settings.data_dir, *([captures] if captures is not None and captures.is_dir() else [])]
    for root in local_roots:
        if not root.is_dir():
            what = "PIPELINE_DATA_DIR" if not dirs else "DIR"
            raise CliError(f"{what} {root}: not a directory", EXIT_USAGE)
    roots = [*local_roots, *([settings.lake_dir] if not dirs and storage.is_remote(settings.lake_dir) else [])]
    old_key = crypto.default_master_key()  # the environment's, else the settings' (handed over by main)
    new_key = crypto.parse_master_key(os.environ.get(crypto.NEW_MASTER_KEY_ENV), crypto.NEW_MASTER_KEY_ENV)
    print(f"rotating the master key of the encrypted files under {', '.join(str(r) for r in roots)}", flush=True)
    report = rotate_tree(
        roots,
        old_key,
        new_key,
        journal=CaptureManifestJournal(local_roots),  # captures are local files, never lake objects
        progress=lambda what, path: print(f"  {what}: {path}", flush=True),
    )
    for path in report.in_progress:
        print(f"  still being written, not rotated: {path}")
    print(report.summary())
    return EXIT_OK

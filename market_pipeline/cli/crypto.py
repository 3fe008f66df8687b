"""`market-pipeline encrypt|decrypt FILE -o OUT`: AES-256-GCM files keyed by PIPELINE_MASTER_KEY."""

from __future__ import annotations

from pathlib import Path

from market_pipeline.cli.common import EXIT_FAILED, EXIT_OK, EXIT_USAGE, CliError


def crypt_command(command: str, source: Path, target: Path) -> int:
    """Encrypt or decrypt `source` into `target`; `target` is written only on full success."""
    from market_pipeline.core.security import crypto

    if not source.is_file():
        raise CliError(f"{source}: no such file", EXIT_USAGE)
    if source.resolve() == target.resolve():
        raise CliError(f"{source}: the output must be a different file", EXIT_USAGE)
    try:
        key = crypto.default_master_key()
    except crypto.MasterKeyError as exc:
        raise CliError(str(exc), EXIT_USAGE) from None
    try:
        if command == "encrypt":
            size = crypto.encrypt_file(source, target, key)
        else:
            size = crypto.decrypt_file(source, target, key)
    except crypto.DecryptionError as exc:
        raise CliError(f"{exc}; {target} was not written", EXIT_FAILED) from None
    except OSError as exc:
        raise CliError(f"cannot {command} {source} into {target}: {exc}", EXIT_FAILED) from None
    print(f"{command}ed {source} -> {target} ({size:,} bytes)")
    return EXIT_OK

"""`market-pipeline crypto` (not built yet)."""

from market_pipeline.cli.common import EXIT_USAGE, CliError


def crypt_command(*args: object) -> int:
    raise CliError("this command is not available yet", EXIT_USAGE)

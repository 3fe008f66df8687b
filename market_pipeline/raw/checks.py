"""Asset checks on the raw lake (filled in by the quality work)."""

raw_checks: list = []

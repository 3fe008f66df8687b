"""Asset checks on reconstructed books (filled in by the quality work)."""

book_checks: list = []

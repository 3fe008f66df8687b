"""Alerts for failed checks and runs: a JSON-lines log and a webhook."""

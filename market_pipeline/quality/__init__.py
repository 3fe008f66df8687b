"""Data quality: validation reports and the human-readable daily report."""

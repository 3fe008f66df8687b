"""`validation_reports`: how good each instrument-day is (filled in by the quality domain)."""

quality_assets: list = []

"""Security hygiene: secret scrubbing, file modes, the audit trail."""

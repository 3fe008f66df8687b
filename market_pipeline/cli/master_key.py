"""The settings' master key handed to core for one command (core never reads the settings)."""

from __future__ import annotations


def hand_over_master_key(required: bool) -> None:
    """Give core the settings' master key (`.env` included) for this command. With `required`
    False, invalid settings are left for the command to meet, if it needs them."""
    from market_pipeline.core.security import crypto
    from market_pipeline.settings import SettingsError, load_settings

    try:
        secret = load_settings().master_key
    except SettingsError:
        if required:
            raise
        return
    crypto.use_master_key(secret.get_secret_value() if secret is not None else None)

"""The core context of a command that reads or writes encrypted files: the settings' master key in it
(core never reads the settings)."""

from __future__ import annotations

from dataclasses import replace

from market_pipeline.core import context


def master_key_context(required: bool) -> context.CoreContext:
    """The current core context with the settings' master key (`.env` included). With `required`
    False, invalid settings are left for the command to meet, if it needs them."""
    from market_pipeline.settings import SettingsError, load_settings

    try:
        secret = load_settings().master_key
    except SettingsError:
        if required:
            raise
        return context.current()
    return replace(context.current(), master_key=secret.get_secret_value() if secret is not None else None)

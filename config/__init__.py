"""Configuration: one frozen Settings object, built with load_settings()."""

from config.settings import ConfigError, Settings, load_settings, mask_url

__all__ = ["ConfigError", "Settings", "load_settings", "mask_url"]

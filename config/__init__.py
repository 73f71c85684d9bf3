"""Configuration: one frozen Settings object, built with load_settings()."""

from config.settings import ConfigError, Settings, load_settings, mask_url
from config.tls import RedisTls

__all__ = ["ConfigError", "RedisTls", "Settings", "load_settings", "mask_url"]

"""Configuration: one frozen Settings object, built with load_settings()."""

from config.settings import ConfigError, Settings, load_settings, load_settings_or_exit
from config.tls import RedisTls
from config.urls import mask_url

__all__ = [
    "ConfigError",
    "RedisTls",
    "Settings",
    "load_settings",
    "load_settings_or_exit",
    "mask_url",
]

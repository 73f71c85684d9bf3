"""The worker entry point: ``celery -A workers.app worker|beat|flower``.

The one module-level singleton of the project: the app built from the Settings of this
process (environment and ``.env``). Everything else receives Settings explicitly; code that
only enqueues uses workers/client.py and never imports this module.
"""

from __future__ import annotations

from config import load_settings
from workers.factory import create_app

app = create_app(load_settings())

__all__ = ["app", "create_app"]

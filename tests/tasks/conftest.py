"""tests/tasks share the one conftest of the Celery tests, tests/workers/conftest.py."""

from tests.workers.conftest import *  # noqa: F403

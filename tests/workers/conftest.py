from tests.workers.fixtures import (
    clean_stack,
    pg_database,
    pg_engine,
    stack,
    unit_cache,
    unit_settings,
)

__all__ = ["clean_stack", "pg_database", "pg_engine", "stack", "unit_cache", "unit_settings"]

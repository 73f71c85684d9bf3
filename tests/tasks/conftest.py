from tests.workers.fixtures import clean_stack, stack, unit_cache, unit_settings

__all__ = ["clean_stack", "stack", "unit_cache", "unit_settings"]

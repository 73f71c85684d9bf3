"""Test-support helpers (real redis-server processes for fault tests)."""

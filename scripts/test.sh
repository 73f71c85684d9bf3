#!/usr/bin/env bash
# Run every check: ruff, mypy, then the whole pytest suite (in parallel) against the real
# Redis on 127.0.0.1:6379 and PostgreSQL on 127.0.0.1:5432. Fails when anything fails.
set -euo pipefail
cd "$(dirname "$0")/.."

python="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$python" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[dev]"

echo "== ruff"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
echo "== mypy"
.venv/bin/mypy
echo "== pytest"
exec .venv/bin/python -m pytest -n "${TEST_WORKERS:-2}" --dist loadfile -p no:cacheprovider "$@"

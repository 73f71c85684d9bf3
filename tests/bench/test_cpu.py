"""bench._cpu: each process's role, and a sampler that sees real work."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from bench._cpu import ROLES, CpuSampler, role_of


def test_roles_by_command_line() -> None:
    own = os.getpid()
    assert role_of(own, "anything", own) == "replayer"
    assert role_of(2, "postgres: 15/main: root test 127.0.0.1(5) SELECT", own) == "postgres"
    assert role_of(3, "/usr/bin/redis-server 127.0.0.1:7000", own) == "redis"
    assert role_of(4, "/usr/bin/redis-sentinel *:26379 [sentinel]", own) == "redis"
    assert role_of(9, "redis-rdb-to-slaves 127.0.0.1:7000", own) == "redis"  # a full sync
    assert role_of(5, ".venv/bin/python -m api_stub --host 127.0.0.1", own) == "api"
    assert role_of(6, "python -m celery -A workers.app worker -c 4", own) == "worker"
    assert role_of(7, "python -m celery -A workers.app beat -l INFO", own) == "beat"
    assert role_of(8, "python -m workers.flower --db f.db", own) == "other"


def test_sampler_counts_a_busy_process_by_role() -> None:
    # Both spin for CPU time, not wall time: on a loaded machine (CI runs tests side by
    # side) a second of wall time may be 0.4 s of CPU.
    spin = "import time\nt = time.process_time()\nwhile time.process_time() - t < 3: pass"
    busy = subprocess.Popen([sys.executable, "-c", spin, "api_stub"])  # an "api" by its name
    sampler = CpuSampler(interval=0.5).start()
    started = time.process_time()
    while time.process_time() - started < 1.0:  # the replayer's share: this loop
        pass
    busy.wait()
    found = sampler.stop()
    assert found is not None
    assert set(found["by_role_s"]) == set(ROLES)
    assert found["by_role_s"]["api"] >= 1.5, found["by_role_s"]  # ~2.5 s of one core
    assert found["by_role_s"]["replayer"] >= 0.5, found["by_role_s"]
    assert 0 < found["machine_busy_share"] <= 1
    assert len(found["over_time"]["t"]) >= 4

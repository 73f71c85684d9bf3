"""Where a pass's CPU went: each process's CPU time by role, sampled once a second from /proc.

A latency figure alone cannot tell a slow path from a saturated machine. While a pass runs,
:class:`CpuSampler` (a process of its own) reads every process's user + system time and
adds what it used since the previous sample to its role, told by its command line:

    api        the API (python -m api_stub)
    worker     the Celery worker and its pool processes
    beat       Celery beat
    postgres   every PostgreSQL process (backends, parallel workers, the checkpointer...)
    redis      redis-server and redis-sentinel (master, replica, Sentinels, the broker), and
               their forks (a replica's full sync, a BGSAVE)
    replayer   this process: the trace's client
    other      the rest (Flower, the shell, the system)

Reported: each role's CPU seconds and share of the machine (its seconds over the pass's
seconds times the cores), the machine's busy share from /proc/stat, and per second each
role's cores in use (``over_time``, on the replay's clock give or take the start-up of its
loop). A process that starts and ends between two samples is not seen; a new process's time
is counted whole in the second it is first seen. Linux only: elsewhere the figures are None.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Final

ROLES: Final = ("api", "worker", "beat", "postgres", "redis", "replayer", "other")
_PROC: Final = Path("/proc")


def role_of(pid: int, cmdline: str, own: int) -> str:
    """The role of a process by its command line (arguments joined by spaces)."""
    if pid == own:
        return "replayer"
    if cmdline.startswith("postgres"):
        return "postgres"
    if "redis-server" in cmdline or "redis-sentinel" in cmdline or cmdline.startswith("redis-"):
        return "redis"  # the last: a fork's title (redis-rdb-bgsave, redis-rdb-to-slaves)
    if "api_stub" in cmdline:
        return "api"
    if "celery" in cmdline and " beat" in cmdline:
        return "beat"
    if "celery" in cmdline and " worker" in cmdline:
        return "worker"
    return "other"


def _ticks(pid: int) -> int | None:
    """User + system clock ticks of a process (its threads included), None once it is gone."""
    try:
        stat = (_PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()  # the name in parentheses may hold spaces
    return int(fields[11]) + int(fields[12])  # utime, stime: fields 14 and 15 of stat


def _cmdline(pid: int) -> str:
    try:
        raw = (_PROC / str(pid) / "cmdline").read_bytes()
    except OSError:
        return ""
    return raw.replace(b"\0", b" ").decode(errors="replace").strip()


def _machine_busy() -> tuple[int, int] | None:
    """(busy, total) ticks of all cores since boot, from /proc/stat's first line."""
    try:
        first = (_PROC / "stat").read_text().split("\n", 1)[0].split()
    except OSError:
        return None
    values = [int(v) for v in first[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    return sum(values) - idle, sum(values)


class _Sampling:
    """The sampling loop, run in a process of its own (``python -m bench._cpu``): a thread in
    the replayer would wait for the replayer's GIL at every file it reads, and slow it."""

    def __init__(self, own: int, interval: float) -> None:
        self.interval = interval
        self._hz = os.sysconf("SC_CLK_TCK")
        self._own = own
        self._skip = os.getpid()  # the sampler itself: not the pass's work
        self._seen: dict[int, tuple[str, int]] = {}  # pid -> (role, ticks at last sample)
        self._sums = dict.fromkeys(ROLES, 0)
        self._series: list[dict[str, float]] = []
        self._started = time.monotonic()
        self._machine_start = _machine_busy()
        self._sample(count=False)

    def run(self, stop: threading.Event) -> dict[str, Any] | None:
        while not stop.wait(self.interval):
            self._sample(count=True)
        return self.result(_machine_busy())

    def _sample(self, *, count: bool) -> None:
        used = dict.fromkeys(ROLES, 0)
        alive: dict[int, tuple[str, int]] = {}
        try:
            pids = [int(p.name) for p in _PROC.iterdir() if p.name.isdigit()]
        except OSError:
            return
        for pid in pids:
            ticks = None if pid == self._skip else _ticks(pid)
            if ticks is None:
                continue
            known = self._seen.get(pid)
            role = known[0] if known else role_of(pid, _cmdline(pid), self._own)
            used[role] += ticks - (known[1] if known else 0)
            alive[pid] = (role, ticks)
        self._seen = alive
        if not count:
            return
        for role, ticks in used.items():
            self._sums[role] += ticks
        point = {"t": round(time.monotonic() - self._started, 1)}
        point |= {role: round(ticks / self._hz / self.interval, 2) for role, ticks in used.items()}
        self._series.append(point)

    def result(self, machine_end: tuple[int, int] | None) -> dict[str, Any] | None:
        if not self._series:
            return None
        seconds = time.monotonic() - self._started
        cores = os.cpu_count() or 1
        by_role = {role: round(ticks / self._hz, 1) for role, ticks in self._sums.items()}
        busy = None
        if self._machine_start and machine_end and machine_end[1] > self._machine_start[1]:
            spent = machine_end[1] - self._machine_start[1]
            busy = round((machine_end[0] - self._machine_start[0]) / spent, 3)
        return {
            "seconds": round(seconds, 1),
            "cores": cores,
            "machine_busy_share": busy,
            "by_role_s": by_role,
            "by_role_share": {
                role: round(value / (seconds * cores), 3) for role, value in by_role.items()
            },
            "over_time": {
                "t": [p["t"] for p in self._series],
                **{role: [p[role] for p in self._series] for role in ROLES},
            },
        }


class CpuSampler:
    """The sampling process, from :meth:`start` to :meth:`stop` (which returns the figures,
    None when /proc is not there or the sampler failed)."""

    def __init__(self, interval: float = 1.0) -> None:
        self.interval = interval
        self._child: subprocess.Popen[bytes] | None = None

    def start(self) -> CpuSampler:
        if _PROC.joinpath("stat").exists():
            self._child = subprocess.Popen(
                [sys.executable, "-m", "bench._cpu", str(os.getpid()), str(self.interval)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
            )
        return self

    def stop(self) -> dict[str, Any] | None:
        if self._child is None:
            return None
        out, _ = self._child.communicate(b"", timeout=30)  # stdin closed: the last sample
        try:
            found: dict[str, Any] | None = json.loads(out or b"null")
        except ValueError:
            return None
        return found


def main() -> None:
    """Sample until standard input closes, then print the figures as JSON."""
    own, interval = int(sys.argv[1]), float(sys.argv[2])
    stop = threading.Event()

    def wait_for_eof() -> None:
        sys.stdin.read()
        stop.set()

    threading.Thread(target=wait_for_eof, daemon=True).start()
    print(json.dumps(_Sampling(own, interval).run(stop)))


if __name__ == "__main__":
    main()

"""HTTP benchmark plumbing: uvicorn processes on free ports, and load driven by wrk.

Every server is the same command, ``python -m uvicorn --factory <app>`` with one worker, uvloop
and httptools, no access log, so the apps differ only in what they run per request. wrk is
Debian's package (``apt-get install wrk``); its Lua hooks pick the request of each call and
print the figures as one JSON line at the end, so no wrk text is parsed.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Final

import httpx

ROOT: Final = Path(__file__).resolve().parents[1]
HOST: Final = "127.0.0.1"
START_TIMEOUT: Final = 30.0
WRK_TIMEOUT: Final = "30s"  # an uncached aggregate under 50 connections takes seconds

# Every script: one seed per wrk thread (threads draw different sequences), and a done() that
# prints the run's figures (latencies in microseconds) and the requests sent, answered or not
# (a script's request() counts them in ``sent``, and its writes in ``writes``).
_FRAME: Final = """
local threads = {}
sent, writes = 0, 0
function setup(thread)
  table.insert(threads, thread)
  thread:set("thread_no", #threads)
end
function init(args)
  math.randomseed(%(seed)d + 7919 * (thread_no or 1))
end
function done(summary, latency, requests)
  local e, total, written = summary.errors, 0, 0
  for _, thread in ipairs(threads) do
    total = total + (thread:get("sent") or 0)
    written = written + (thread:get("writes") or 0)
  end
  io.write(string.format(
    '{"requests":%%d,"sent":%%d,"writes":%%d,"duration_us":%%d,'
    .. '"p50_us":%%d,"p99_us":%%d,"mean_us":%%.1f,'
    .. '"connect_errors":%%d,"read_errors":%%d,"write_errors":%%d,"status_errors":%%d,'
    .. '"timeouts":%%d}\\n',
    summary.requests, total, written, summary.duration, latency:percentile(50),
    latency:percentile(99), latency.mean, e.connect, e.read, e.write, e.status, e.timeout))
end
"""


class BenchError(RuntimeError):
    """The benchmark could not measure what it claims to measure."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
    return port


class Server:
    """One uvicorn process serving ``factory`` (``module:function``) on a free port."""

    def __init__(self, name: str, factory: str, env: Mapping[str, str], ready: str) -> None:
        self.name = name
        self.port = free_port()
        self.base = f"http://{HOST}:{self.port}"
        self._workdir = Path(tempfile.mkdtemp(prefix=f"bench-{name}-"))
        self._log = (self._workdir / "server.log").open("wb")
        command = [
            sys.executable,
            "-m",
            "uvicorn",
            "--factory",
            factory,
            "--host",
            HOST,
            "--port",
            str(self.port),
            "--workers",
            "1",
            "--loop",
            "uvloop",
            "--http",
            "httptools",
            "--no-access-log",
            "--log-level",
            "warning",
        ]
        # The working directory holds no .env: the environment given is all the app reads.
        self._proc = subprocess.Popen(
            command,
            cwd=self._workdir,
            env={**os.environ, **env, "PYTHONPATH": str(ROOT)},
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        try:
            self._wait_ready(ready)
        except BaseException:
            self.close()
            raise

    def _wait_ready(self, path: str) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                if httpx.get(self.base + path, timeout=30.0).status_code < 500:
                    return
            except httpx.TransportError:
                pass
            if self._proc.poll() is not None or time.monotonic() > deadline:
                raise BenchError(f"{self.name} did not start:\n{self.log()}")
            time.sleep(0.1)

    def log(self) -> str:
        self._log.flush()
        return (self._workdir / "server.log").read_text(errors="replace")[-4000:]

    def close(self) -> None:
        """Stop the process (its lifespan closes its database connections) and wait for it."""
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._log.close()
        shutil.rmtree(self._workdir, ignore_errors=True)

    def __enter__(self) -> Server:
        return self

    def __exit__(
        self, _t: type[BaseException] | None, _e: BaseException | None, _tb: TracebackType | None
    ) -> None:
        self.close()


@dataclass(frozen=True)
class WrkResult:
    requests: int  # answered
    sent: int  # answered, failed, or still in flight when the run ended
    writes: int  # of those sent, the writes (scripts that write count them)
    seconds: float
    p50_ms: float
    p99_ms: float
    errors: int

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "rps": round(self.rps, 1),
            "p50_ms": round(self.p50_ms, 3),
            "p99_ms": round(self.p99_ms, 3),
            "errors": self.errors,
        }


def require_wrk() -> str:
    found = shutil.which("wrk")
    if found is None:
        raise BenchError("wrk is not installed: apt-get update && apt-get install -y wrk")
    return found


def wrk(url: str, script: str, *, connections: int, seconds: float, seed: int = 1) -> WrkResult:
    """Run wrk (one thread) with a Lua ``script`` against ``url``; errors are counted."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as file:
        file.write(_FRAME % {"seed": seed} + script)
    try:
        completed = subprocess.run(
            [
                require_wrk(),
                "-t1",
                f"-c{connections}",
                f"-d{max(1, round(seconds))}s",
                f"--timeout={WRK_TIMEOUT}",
                "-s",
                file.name,
                url,
            ],
            capture_output=True,
            text=True,
            check=False,
            timeout=seconds + 120,
        )
    finally:
        os.unlink(file.name)
    line = next((text for text in completed.stdout.splitlines() if text.startswith("{")), None)
    if completed.returncode != 0 or line is None:
        raise BenchError(f"wrk failed ({completed.returncode}): {completed.stderr[-2000:]}")
    figures = json.loads(line)
    errors = sum(
        figures[name]
        for name in ("connect_errors", "read_errors", "write_errors", "status_errors", "timeouts")
    )
    return WrkResult(
        requests=figures["requests"],
        sent=figures["sent"],
        writes=figures["writes"],
        seconds=figures["duration_us"] / 1e6,
        p50_ms=figures["p50_us"] / 1000,
        p99_ms=figures["p99_us"] / 1000,
        errors=errors,
    )


def fixed_paths(paths: Sequence[str]) -> str:
    """Each request GETs one of ``paths``, drawn uniformly."""
    listed = ",".join(f'"{path}"' for path in paths)
    return (
        f"local paths = {{{listed}}}\n"
        "function request()\n"
        "  sent = sent + 1\n"
        '  return wrk.format("GET", paths[math.random(#paths)])\n'
        "end\n"
    )


def zipf_with_writes(path_prefix: str, members: int, *, exponent: float, write_share: float) -> str:
    """Zipf(``exponent``) over ranks 1..members, each rank a member id through a fixed
    permutation (so the hottest members are spread over the table); exactly ``write_share``
    of the requests, evenly spaced, PATCH the drawn member's first name, the rest GET it (a
    coin flip per request would let the share, and the query count it bounds, drift by
    sampling noise from one run to the next)."""
    stride = _coprime_stride(members)
    return f"""
local n, s, share = {members}, {exponent}, {write_share}
local stride = {stride}
local cdf = {{}}
local headers = {{["Content-Type"] = "application/json"}}
local prefix = "{path_prefix}"
do
  local total = 0
  for k = 1, n do total = total + 1 / k ^ s; cdf[k] = total end
  for k = 1, n do cdf[k] = cdf[k] / total end
end
local function rank()
  local u, lo, hi = math.random(), 1, n
  while lo < hi do
    local mid = math.floor((lo + hi) / 2)
    if cdf[mid] < u then lo = mid + 1 else hi = mid end
  end
  return lo
end
function request()
  sent = sent + 1
  local id = ((rank() - 1) * stride) % n + 1
  if math.floor(sent * share) > math.floor((sent - 1) * share) then
    writes = writes + 1
    local body = string.format('{{"first_name":"Zipf%d"}}', sent)
    return wrk.format("PATCH", prefix .. id, headers, body)
  end
  return wrk.format("GET", prefix .. id)
end
"""


def _coprime_stride(members: int) -> int:
    """A stride near members * 0.618 sharing no factor with ``members``: a permutation."""
    stride = max(1, int(members * 0.6180339887))
    while math.gcd(stride, members) != 1:
        stride += 1
    return stride

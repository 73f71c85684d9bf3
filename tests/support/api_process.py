"""``python -m api_stub --port P``: the API as a real uvicorn process, for tests.

It runs in a directory of its own (no .env of the working tree: the environment given is all
it reads), in its own process group, its output in a log file there, and is stopped by its
process id.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.support.process_group import stop_group
from tests.support.redis_procs import free_port

ROOT = Path(__file__).resolve().parents[2]
API_START_TIMEOUT = 30.0


@dataclass
class ApiProcess:
    """``python -m api_stub --port P`` in its own process group, its output in a log file."""

    env: dict[str, str]
    directory: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.directory / "api.log"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def start(self) -> ApiProcess:
        self.directory.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "api_stub", "--port", str(self.port)],
                cwd=self.directory,  # no .env of the working tree: the environment is all
                env=os.environ | self.env | {"PYTHONPATH": str(ROOT)},
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + API_START_TIMEOUT
        while True:
            try:
                httpx.get(f"{self.base_url}/api/v1/lookups/tiers", timeout=1.0)
                return self
            except httpx.TransportError:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"the API exited:\n{self.log()}") from None
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the API did not start:\n{self.log()}") from None
                time.sleep(0.1)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (uvicorn's graceful shutdown), then SIGKILL of its group if it lingers."""
        if self.proc is not None:
            stop_group(self.proc, timeout)

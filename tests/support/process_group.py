"""Stopping a test's child process that runs in a session (process group) of its own."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess


def kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the whole group (children a dead leader left included)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


def stop_group(proc: subprocess.Popen[bytes], timeout: float) -> None:
    """SIGTERM (a graceful shutdown), then SIGKILL of the group if it lingers past ``timeout``."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        kill_group(proc)
        proc.wait(10)

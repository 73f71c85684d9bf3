"""A reader loop in its own process (no GIL shared with the test): GET of hot keys, timed.

    python -m tests.management.readers PORT KEY_PREFIX OUT_FILE STOP_FILE

Writes ``<wall clock start> <latency seconds>`` per request to OUT_FILE until STOP_FILE exists.
"""

from __future__ import annotations

import os
import sys
import time

import redis


def main(port: int, prefix: str, out: str, stop: str) -> None:
    client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=10)
    keys = [f"{prefix}{i}" for i in range(100)]
    lines: list[str] = []
    n = 0
    while not os.path.exists(stop):
        key = keys[n % len(keys)]
        wall, started = time.time(), time.perf_counter()
        if client.get(key) is None:
            raise SystemExit(f"hot key {key} vanished")
        lines.append(f"{wall:.6f} {time.perf_counter() - started:.7f}\n")
        n += 1
    with open(out, "w") as fh:
        fh.writelines(lines)
    client.close()


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4])

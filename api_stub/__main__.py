"""``python -m api_stub [--host H] [--port P]``: serve the API with uvicorn (port 5000)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import uvicorn

from api_stub.app import create_app
from config import load_settings_or_exit

DEFAULT_PORT = 5000  # the design's port


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m api_stub", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="port to listen on")
    parser.add_argument("--access-log", action="store_true", help="log every request")
    args = parser.parse_args(argv)
    settings = load_settings_or_exit()
    uvicorn.run(
        create_app(settings),
        host=args.host,
        port=args.port,
        access_log=args.access_log,
        log_level="info",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The membership API stub: FastAPI routes over db/, cached by the core (``create_app``)."""

from api_stub.app import create_app

__all__ = ["create_app"]

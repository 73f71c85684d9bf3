"""The dashboard's routes: the page, whoami (the token's role) and the static assets."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Final

from fastapi import APIRouter, Response
from fastapi.responses import HTMLResponse
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

from api_stub.management.guard import Viewer
from api_stub.routes import json_response

PAGE: Final = "/dashboard"
STATIC: Final = "/dashboard/static"
STATIC_DIR: Final = Path(__file__).parent / "static"

# Only the app's own files run, and data goes only to the app: the token is in
# sessionStorage, where any script on the page could read it.
CSP: Final = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    )
)
PAGE_HEADERS: Final = {
    "Content-Security-Policy": CSP,
    "Cache-Control": "no-cache",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
}


class Assets(StaticFiles):
    """The page's files, revalidated on every load (304 when unchanged): after a deploy the
    browser never runs old scripts against a new API."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers["Cache-Control"] = "no-cache"
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response


def render_page(environment: str) -> str:
    template = (STATIC_DIR / "index.html").read_text(encoding="utf-8")
    return template.replace("{{environment}}", html.escape(environment))


def page_router(environment: str) -> APIRouter:
    """The page (rendered once: it changes only with a deploy) and whoami."""
    body = render_page(environment)
    router = APIRouter(tags=["dashboard"])

    @router.get(PAGE, include_in_schema=False)
    async def dashboard_page() -> Response:
        return HTMLResponse(body, headers=PAGE_HEADERS)

    @router.get(f"{PAGE}/whoami", summary="The presented token's id and role")
    async def whoami(who: Viewer) -> Response:
        return json_response({"id": who.id, "role": who.role.label})

    return router

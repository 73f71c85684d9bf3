"""The operator dashboard: one page at /dashboard, drawn from the management API.

The page and its assets are public and hold nothing secret: a browser cannot attach a bearer
token to a page navigation, and a token in the URL would end up in history and access logs.
The page asks for a management token, keeps it in sessionStorage (gone with the tab) and
sends it as ``Authorization: Bearer`` on every data call; everything it shows comes from
the role-protected routes under /api/v1/cache (viewer), its buttons call the operator
routes, and a strict Content-Security-Policy lets only the app's own scripts run::

    GET /dashboard            the page (no token needed; it has no data)
    GET /dashboard/whoami     the token's id and role (viewer): greys out operator buttons
    GET /dashboard/static/*   its scripts and styles, served by the app (works offline)

static/vendor/ holds uPlot 1.6.32 (npm package ``uplot``, MIT, uPlot.LICENSE), the only
third-party code; no build step.

:func:`install` adds it to an app made by api_stub.app.create_app, after the management API::

    install_management(app, settings)
    install_dashboard(app, settings)
"""

from __future__ import annotations

from fastapi import FastAPI

from api_stub.dashboard.routes import PAGE, STATIC, STATIC_DIR, Assets, page_router
from config import Settings

__all__ = ["PAGE", "STATIC", "install"]


def install(app: FastAPI, settings: Settings) -> None:
    """Add the page, its whoami route and its static assets to ``app``.

    Needs the management API installed first (api_stub.management.install): whoami goes
    through its token guard. A second call on the same app does nothing.
    """
    if not hasattr(app.state, "management"):
        raise RuntimeError("install the management API before the dashboard")
    if getattr(app.state, "dashboard", False):
        return
    app.include_router(page_router(settings.environment))
    app.mount(STATIC, Assets(directory=STATIC_DIR), name="dashboard-static")
    app.state.dashboard = True

"""The page, its assets and whoami over HTTP: public page, role-protected data, no CDN."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import httpx
import pytest
from fastapi import FastAPI

from api_stub import create_app, dashboard
from api_stub.dashboard.routes import STATIC_DIR
from config import load_settings
from tests.dashboard.conftest import Live


class _References(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in ("src", "href") and value is not None:
                self.found.append(value)


def test_the_page_is_public_and_locked_down(live: Live) -> None:
    answer = httpx.get(f"{live.url}/dashboard")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/html")
    csp = answer.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "connect-src 'self'" in csp
    assert "'unsafe-inline'" not in csp
    assert answer.headers["x-frame-options"] == "DENY"
    assert 'data-env="test"' in answer.text
    assert "{{" not in answer.text


def test_every_asset_is_served_by_the_app(live: Live) -> None:
    parser = _References()
    parser.feed(httpx.get(f"{live.url}/dashboard").text)
    assets = [ref for ref in parser.found if not ref.startswith("data:")]
    assert len(assets) >= 4
    with httpx.Client(base_url=f"{live.url}/") as client:
        for ref in assets:
            assert not re.match(r"^[a-z]+://|^//", ref), f"{ref} is not served by the app"
            answer = client.get(ref)
            assert answer.status_code == 200, ref
            assert answer.headers["cache-control"] == "no-cache"
        module = client.get("dashboard/static/js/main.js")
        assert module.headers["content-type"].startswith("text/javascript")
        license_text = client.get("dashboard/static/vendor/uPlot.LICENSE").text
        assert "MIT" in license_text


def test_scripts_import_nothing_from_elsewhere() -> None:
    for script in (STATIC_DIR / "js").glob("*.js"):
        text = script.read_text()
        for source in re.findall(r'\bfrom "([^"]+)";', text):
            assert source.startswith("./"), f"{script.name} imports {source}"
        assert "http://" not in text and "https://" not in text, script.name


@pytest.mark.parametrize("role", ["viewer", "operator", "admin"])
def test_whoami_names_the_role(live: Live, role: str) -> None:
    answer = httpx.get(f"{live.url}/dashboard/whoami", headers=live.tokens.headers(role))
    assert answer.status_code == 200
    assert answer.json() == {"id": f"{role}-test", "role": role}


@pytest.mark.parametrize("role", [None, "wrong"])
def test_whoami_refuses_a_missing_or_unknown_token(live: Live, role: str | None) -> None:
    answer = httpx.get(f"{live.url}/dashboard/whoami", headers=live.tokens.headers(role))
    assert answer.status_code == 401
    assert answer.headers["www-authenticate"].startswith("Bearer")


def test_the_data_behind_the_page_needs_a_token(live: Live) -> None:
    for path in ("metrics", "metrics/history", "reports", "health"):
        assert httpx.get(f"{live.url}/api/v1/cache/{path}").status_code == 401


def test_install_needs_the_management_api() -> None:
    with pytest.raises(RuntimeError, match="management"):
        dashboard.install(FastAPI(), load_settings(_env_file=None))


def test_install_twice_adds_the_routes_once() -> None:
    settings = load_settings(_env_file=None)
    app = create_app(settings)
    dashboard.install(app, settings)
    routes = len(app.routes)
    dashboard.install(app, settings)
    assert len(app.routes) == routes
    assert sum(getattr(route, "path", None) == dashboard.STATIC for route in app.routes) == 1

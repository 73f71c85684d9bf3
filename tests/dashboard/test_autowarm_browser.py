"""The dashboard shows an automatic warm-up nobody typed: a ``clear`` through the management
API (its own request, not the dashboard's) sends one, the real worker runs it, and it joins
the tasks list, followed to SUCCESS (GET /warmup/current, then its progress)."""

from __future__ import annotations

import httpx
import pytest
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement

from api_stub import routes
from api_stub.management import PREFIX
from tests.dashboard.conftest import Live
from tests.dashboard.test_browser import (
    attribute,
    browser,
    console_errors,
    find,
    sign_in,
    wait_for,
)
from tests.workers.processes import WorkerProcess

pytestmark = pytest.mark.slow

__all__ = ["browser"]  # the fixture, from the dashboard's browser test


def test_an_automatic_warm_up_appears_in_the_tasks_list(
    live: Live, worker: WorkerProcess, browser: WebDriver
) -> None:
    browser.get(f"{live.url}/dashboard")
    sign_in(browser, live.tokens.clear["viewer"], "viewer")
    with httpx.Client(base_url=live.url) as client:
        client.get(f"{routes.PREFIX}/lookups/tiers").raise_for_status()  # something to clear
        admin = {"Authorization": f"Bearer {live.tokens.clear['admin']}"}
        cleared = client.delete(f"{PREFIX}/clear", params={"pattern": "*"}, headers=admin)
    assert cleared.status_code == 200, cleared.text
    task_id = cleared.json()["warmup"]["task_id"]
    css = f"#tasks li.task[data-automatic='true'][data-task-id='{task_id}']"

    def finished(d: WebDriver) -> WebElement | None:
        state = attribute(d, css, "data-state")
        if state in ("FAILURE", "ERROR"):
            pytest.fail(f"automatic warm-up {state}: {find(d, css).text}")
        return find(d, css) if state == "SUCCESS" else None

    item: WebElement = wait_for(browser, "the automatic warm-up", finished, timeout=30)
    assert "Automatic warm-up: clear" in item.text
    assert "written" in item.text
    assert not console_errors(browser)

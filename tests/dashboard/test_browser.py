"""The dashboard in headless Chromium against the live API, a real worker and seeded snapshots.

It signs in as a user would (viewer, then operator), waits for the charts to be drawn from
the seeded snapshots and checks the figures they show against the ones computed from the
same numbers (tests/dashboard/seed.py), runs a warm-up from its button until the worker
finishes it, and an invalidation. The browser may reach 127.0.0.1 only, so an asset from
anywhere else would fail to load, and any console error (a CSP refusal, a script error)
fails the test. The screenshot is saved to test-artifacts/dashboard.png.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import Select, WebDriverWait

from api_stub import routes
from api_stub.management import PREFIX as MANAGEMENT
from api_stub.management.latency import OUTCOMES
from cache.keys import Keys
from cache.kinds import KINDS, WARMUPS
from tests.conftest import TEST_REDIS_DB
from tests.dashboard import seed
from tests.dashboard.conftest import Live
from tests.workers.processes import REPO, WorkerProcess

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
ARTIFACTS = REPO / "test-artifacts"
WIDTH = 1440
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    f"--window-size={WIDTH},1000",
    # Nothing but the API: a CDN reference would fail to load and show in the console.
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
)
# Pixels of a series' colour in a chart's canvas: a drawn line has hundreds.
COUNT_COLOUR = """
const [selector, r, g, b] = arguments;
const canvas = document.querySelector(selector);
const data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
let found = 0;
for (let i = 0; i < data.length; i += 4) {
  const near = Math.abs(data[i] - r) + Math.abs(data[i + 1] - g) + Math.abs(data[i + 2] - b);
  if (data[i + 3] > 200 && near < 60) found += 1;
}
return found;
"""


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[WebDriver]:
    missing = [str(path) for path in (CHROMIUM, CHROMEDRIVER) if not path.exists()]
    if missing:
        pytest.fail(f"missing {missing}: apt-get install chromium chromium-driver")
    options = Options()
    options.binary_location = str(CHROMIUM)
    for flag in (*FLAGS, f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(executable_path=str(CHROMEDRIVER), log_output=str(tmp_path / "driver.log"))
    driver = webdriver.Chrome(options=options, service=service)
    try:
        yield driver
    finally:
        driver.quit()


def wait_for(
    driver: WebDriver, what: str, check: Callable[[WebDriver], Any], timeout: float = 30
) -> Any:
    # The page redraws every few seconds: an element found just before a redraw is stale.
    wait = WebDriverWait(
        driver, timeout, poll_frequency=0.1, ignored_exceptions=(StaleElementReferenceException,)
    )
    return wait.until(check, f"waiting for {what}")


def find(driver: WebDriver, css: str) -> WebElement:
    return driver.find_element(By.CSS_SELECTOR, css)


def attribute(driver: WebDriver, css: str, name: str) -> str | None:
    found = driver.find_elements(By.CSS_SELECTOR, css)
    return found[0].get_attribute(name) if found else None


def sign_in(driver: WebDriver, token: str, role: str) -> None:
    field = wait_for(
        driver, "the sign-in form", lambda d: find(d, "#token").is_displayed() and find(d, "#token")
    )
    field.clear()
    field.send_keys(token)
    find(driver, "#signin-button").click()
    wait_for(driver, f"the {role} session", lambda d: attribute(d, "#who", "data-role") == role)


def legend(driver: WebDriver, chart: str, series: str) -> tuple[float, str]:
    def read(d: WebDriver) -> tuple[float, str]:
        item = find(d, f"#{chart} li[data-series='{series}']")
        value = float(item.get_attribute("data-value") or "nan")
        return value, item.find_element(By.TAG_NAME, "b").text

    found: tuple[float, str] = wait_for(driver, f"the legend of {series}", read)
    return found


def run_task(driver: WebDriver, kind: str, timeout: float = 60) -> WebElement:
    """The newest task of ``kind`` in the actions card, once it has finished."""
    css = f"#tasks li.task[data-kind='{kind}']"

    def finished(d: WebDriver) -> WebElement | None:
        item = find(d, css)
        state = item.get_attribute("data-state")
        if state in ("FAILURE", "ERROR"):
            pytest.fail(f"{kind} {state}: {item.text}")
        return item if state == "SUCCESS" else None

    item: WebElement = wait_for(driver, f"the {kind} to finish", finished, timeout)
    return item


def has_points(chart: str, points: int) -> Callable[[WebDriver], bool]:
    return lambda driver: attribute(driver, f"#{chart}", "data-points") == str(points)


def test_dashboard_shows_the_snapshots_and_runs_a_warmup(
    live: Live, worker: WorkerProcess, browser: WebDriver
) -> None:
    seeded = live.seeded
    # Requests to a cached route, a miss then hits: the latency card has both kinds.
    with httpx.Client(base_url=live.url) as client:
        for _ in range(3):
            for name in ("tiers", "statuses"):
                client.get(f"{routes.PREFIX}/lookups/{name}").raise_for_status()
    # Beat is not part of this stack: its leader lease is what the health check reads.
    lease = Keys(live.settings.redis_key_prefix).system("beat", "leader")
    shared = redis.Redis(host="127.0.0.1", port=6379, db=TEST_REDIS_DB)
    shared.set(lease, b"test-beat", px=300_000)
    try:
        browser.get(f"{live.url}/dashboard")

        # A viewer sees everything but may not act.
        sign_in(browser, live.tokens.clear["viewer"], "viewer")
        assert not find(browser, "#warmup-button").is_enabled()
        assert not find(browser, "#invalidate-button").is_enabled()
        find(browser, "#signout").click()
        sign_in(browser, live.tokens.clear["operator"], "operator")
        assert find(browser, "#warmup-button").is_enabled()

        # The charts, drawn from the seeded snapshots.
        for chart in ("chart-hit-rate", "chart-error-rate", "chart-memory"):
            wait_for(browser, chart, has_points(chart, seed.MINUTES))
        assert (
            attribute(browser, "#chart-hit-rate", "data-series")
            == "analytics,statistics,member,lookup"  # cache.types.DataType's order
        )
        for name, expected in seeded.last_hit_rate.items():
            value, text = legend(browser, "chart-hit-rate", name)
            assert value == pytest.approx(expected, rel=1e-9), name
            assert text == f"{expected * 100:.1f}%", name
        value, text = legend(browser, "chart-error-rate", "all types")
        assert value == pytest.approx(seeded.last_error_rate, rel=1e-9)
        assert text == f"{seeded.last_error_rate * 100:.2f}%"
        value, text = legend(browser, "chart-memory", "used")
        assert value == seeded.last_used_memory
        assert text == f"{seeded.last_used_memory / seed.MIB:.1f} MiB"
        assert legend(browser, "chart-memory", "maxmemory")[1] == "64.0 MiB"
        member_line = browser.execute_script(COUNT_COLOUR, "#chart-hit-rate canvas", 37, 99, 235)
        assert member_line > 200, "the member line is not drawn"

        # The latency history: p95 per kind, cached vs uncached, one point per snapshot; the
        # kinds are those the snapshots hold, named by the server, in the registry's order.
        wait_for(browser, "chart-latency", has_points("chart-latency", seed.MINUTES))
        labels = [f"{kind} {outcome}" for kind in ("growth", "lookup") for outcome in OUTCOMES]
        assert attribute(browser, "#chart-latency", "data-series") == ",".join(labels)
        for label, expected in seeded.last_latency.items():
            value, text = legend(browser, "chart-latency", label)
            assert value == expected, label
            assert text == series_duration(expected), label
        growth = browser.execute_script(COUNT_COLOUR, "#chart-latency canvas", 234, 88, 12)
        assert growth > 100, "the growth lines are not drawn"
        # Another quantile and one kind: the lines follow the choice.
        Select(find(browser, "#latency-quantile")).select_by_value("p99")
        Select(find(browser, "#latency-kind")).select_by_value("lookup")
        assert (
            attribute(browser, "#chart-latency", "data-series") == "lookup cached,lookup uncached"
        )
        assert (
            legend(browser, "chart-latency", "lookup uncached")[0]
            == (seeded.last_latency["lookup uncached"])
        )
        Select(find(browser, "#latency-kind")).select_by_value("")
        Select(find(browser, "#latency-quantile")).select_by_value("p95")

        # The key distribution of the latest snapshot, largest first.
        bars = browser.find_elements(By.CSS_SELECTOR, "#keyspace .bar")
        labels = [bar.get_attribute("data-label") for bar in bars]
        assert labels == sorted(seed.KEYSPACE, key=lambda k: -seed.KEYSPACE[k][0])
        assert find(browser, "#keyspace .bar[data-label='member'] .num").text == "48,213 · 28.1 MiB"

        # Reports with their alerts.
        wait_for(
            browser,
            "the reports",
            lambda d: (
                len(d.find_elements(By.CSS_SELECTOR, "#reports tbody tr[data-job]"))
                == len(seed.REPORTS)
            ),
        )
        alerts = [
            cell.text
            for cell in browser.find_elements(By.CSS_SELECTOR, "#reports tr.alerting td.alert")
        ]
        assert sorted(alerts) == sorted(alert for *_, alert in seed.REPORTS if alert)

        # Live figures: health, breaker, latency of the requests above.
        wait_for(browser, "health", lambda d: attribute(d, "#health", "data-status") != "unknown")
        assert attribute(browser, "#health", "data-status") == "ok", find(browser, "#health").text
        assert attribute(browser, "#tile-breaker", "data-state") == "closed"
        # The consistency monitor's windows, the shortest first (no write sampled here).
        assert find(browser, "#tile-consistency .value").text == "— within 1 s"
        assert attribute(browser, "#breakers tr[data-state='closed']", "data-process")
        groups = {
            bar.get_attribute("data-group")
            for bar in browser.find_elements(By.CSS_SELECTOR, "#latency .bar")
        }
        assert groups == {"cached", "uncached"}

        # The cached kinds, from the registry the API serves (GET /kinds), and the actions'
        # choices with them.
        wait_for(
            browser,
            "the kinds table",
            lambda d: d.find_elements(By.CSS_SELECTOR, "#kinds tr[data-kind='growth']"),
        )
        shown = [
            row.get_attribute("data-kind")
            for row in browser.find_elements(By.CSS_SELECTOR, "#kinds tbody tr")
        ]
        assert shown == list(KINDS.names)
        choices = Select(find(browser, "#warmup-kind")).options
        assert [option.get_attribute("value") for option in choices] == list(WARMUPS)

        # A warm-up from its button, followed to the end by polling its progress.
        Select(find(browser, "#warmup-kind")).select_by_value("all")
        find(browser, "#warmup-button").click()
        done = run_task(browser, "warmup")
        assert done.get_attribute("data-fraction") == "1"
        assert done.get_attribute("data-task-id")
        assert "written" in done.find_element(By.CSS_SELECTOR, ".task-detail").text
        bar = done.find_element(By.CSS_SELECTOR, ".progress > span")
        wait_for(
            browser, "a full progress bar", lambda d: bar.get_attribute("style") == "width: 100%;"
        )

        # An invalidation, confirmed in the browser's dialog, clears the lookups just warmed.
        Select(find(browser, "#invalidate-type")).select_by_value("lookup")
        find(browser, "#invalidate-button").click()
        wait_for(browser, "the confirmation", expected_conditions.alert_is_present()).accept()
        cleared = run_task(browser, "invalidation")
        assert "keys cleared" in cleared.text

        # The write-behind chart grows with each poll (one every 5 s).
        wait_for(
            browser,
            "two write-behind polls",
            lambda d: int(attribute(d, "#chart-writebehind", "data-points") or 0) >= 2,
            timeout=15,
        )
        save_screenshot(browser)
    finally:
        shared.delete(lease)
        shared.close()

    errors = console_errors(browser)
    assert not errors, errors


# /health answers 503 whenever a check fails (a loaded machine's worker ping, say): its
# documented answer, which the page shows; the browser logs any 5xx fetch as an error.
_HEALTH_503 = (
    f"{MANAGEMENT}/health - Failed to load resource: the server responded with a status of 503"
)


def console_errors(browser: WebDriver) -> list[dict[str, Any]]:
    """The page's console errors, but for /health's 503."""
    console: list[dict[str, Any]] = browser.get_log("browser")  # type: ignore[no-untyped-call]
    return [e for e in console if e["level"] == "SEVERE" and _HEALTH_503 not in e["message"]]


def series_duration(seconds: float) -> str:
    """series.js duration() of a latency below a second."""
    if seconds < 0.001:
        return f"{seconds * 1e6:.0f} µs"
    return f"{seconds * 1000:.{2 if seconds < 0.01 else 1}f} ms"


def save_screenshot(driver: WebDriver) -> None:
    """The whole page, at the width it was tested at."""
    height = int(driver.execute_script("return document.documentElement.scrollHeight"))
    metrics = {"width": WIDTH, "height": height, "deviceScaleFactor": 1, "mobile": False}
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)
    time.sleep(0.5)  # the charts redraw at the new size
    ARTIFACTS.mkdir(exist_ok=True)
    driver.save_screenshot(str(ARTIFACTS / "dashboard.png"))

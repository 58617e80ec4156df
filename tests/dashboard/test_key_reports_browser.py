"""A key's reports in a real browser (Chromium) under the strict Content-Security-Policy.

The server is the real one (``config.serve``) with its collected static files, the key's
traffic partly made through it (chat completions the proxy forwards to the fake provider,
settles and traces) and partly over the past weeks through the metering path. The browser
signs in through the form and opens the usage, requests and statement pages: Chart.js must
draw every chart (also after htmx swaps the fragment), the filters and the window picker
work, any CSP violation fails the test, and at 390 px nothing scrolls sideways (wide tables
scroll inside their ``.table-wrap``); with JavaScript off the links and forms still work. Screenshots at 1280 and 390 px go to
``var/screenshots/``. Skipped where Debian's ``chromium`` is not installed.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone
from playwright.sync_api import Page, expect, sync_playwright

from accounts.services import user_password_ensure
from keys.models import ClientKey
from tests.browser import CHROMIUM, DESKTOP, PHONE, RECORD_VIOLATIONS, SCREENSHOTS, needs_chromium
from tests.dashboard.key_reports import page_url
from tests.dashboard.traffic import failed, served
from tests.proxy.conftest import (
    ProxyServer,
    World,
    assert_books_clean,
    build_world,
    closed_port,
    fake_upstream,
    post,
    start_proxy_server,
    traces_of,
)
from tests.proxy.upstream_fake import FakeUpstream

# The fixtures of tests/proxy, used here as there.
__all__ = ["closed_port", "fake_upstream", "start_proxy_server"]

PASSWORD = "correct-horse-battery-9"
PROXY_CALLS = 4
HISTORY = 60  # requests over the last 30 days, a third of them to claude-fake

pytestmark = needs_chromium


# Every chart canvas of the page: drawn by Chart.js (an instance) and of a visible size.
CHARTS_DRAWN = """
() => [...document.querySelectorAll("canvas[data-chart]")].map((canvas) => {
  const chart = window.Chart && window.Chart.getChart(canvas);
  return {
    drawn: Boolean(chart),
    points: chart ? chart.data.datasets.reduce((n, set) => n + set.data.length, 0) : 0,
    width: canvas.width,
    height: canvas.height,
  };
})
"""

# What sticks out to the right of the viewport, outside the scrolling boxes of the tables and
# of the header's navigation (the box itself must fit).
WIDER_THAN_VIEWPORT = """
() => {
  const width = document.documentElement.clientWidth;
  return [...document.querySelectorAll("body *")]
    .filter((el) => !el.closest(".table-wrap") && el.getClientRects().length)
    .filter((el) => !el.parentElement.closest(".site-header .main-nav"))
    .filter((el) => el.getBoundingClientRect().right > width + 1)
    .map((el) => `${el.tagName.toLowerCase()}.${el.className} ${Math.round(el.getBoundingClientRect().right)}`);
}
"""

# Tables wider than their wrapper, which scrolls them (at phone width).
TABLES_SCROLLING_INSIDE = """
() => [...document.querySelectorAll(".table-wrap")].map((wrap) => ({
  scrolls: wrap.scrollWidth > wrap.clientWidth,
  overflow: getComputedStyle(wrap).overflowX,
}))
"""


@dataclass
class Reseller:
    world: World
    email: str
    key: ClientKey


@pytest.fixture(scope="module")
def server(start_proxy_server: Callable[..., ProxyServer]) -> ProxyServer:
    # The pages' CSS and JavaScript (Pico, htmx, Chart.js, app.*), served as in production.
    call_command("collectstatic", "--noinput", verbosity=0, stdout=io.StringIO())
    return start_proxy_server()


@pytest.fixture
def reseller(
    transactional_db: None, server: ProxyServer, fake_upstream: FakeUpstream, closed_port: int
) -> Iterator[Reseller]:
    """A reseller in Kolkata with a $10-for-$6 key: calls made now through the proxy, and
    a month of earlier traffic (two models, a failure) through the metering path."""
    fake_upstream.clear()
    world = build_world(fake_upstream, server, closed_port)
    tenant = world.tenant
    tenant.name = "Acme Resale"
    tenant.support_email = "help@acme.example"
    tenant.timezone = "Asia/Kolkata"
    tenant.save()
    user_password_ensure(user=tenant.owner, password=PASSWORD)
    issued = world.key(label="Acme production", default_tag="prod")
    for n in range(PROXY_CALLS):
        chat = {"model": "gpt-fake", "messages": [{"role": "user", "content": "Hello " * (40 + n)}]}
        response = post(world, "/v1/chat/completions", chat, issued.secret)
        assert response.status_code == 200, response.text
    traces_of(issued.key, PROXY_CALLS)
    key = ClientKey.objects.get(pk=issued.key.pk)
    ClientKey.objects.filter(pk=key.pk).update(created_at=timezone.now() - timedelta(days=70))
    now = timezone.now()
    gpt, claude = world.prices["gpt-fake@fake-openai"], world.prices["claude-fake@fake-anthropic"]
    for n in range(HISTORY):
        served(
            key,
            claude if n % 3 == 0 else gpt,
            request_id=f"req-history-{n}",
            at=now - timedelta(days=n // 2, hours=n % 7),
            input_tokens=4_000 + 250 * n,
            output_tokens=900 + 40 * n,
            cached_input_tokens=1_200 if n % 2 else 0,
            tag="" if n % 5 == 0 else "prod",
            latency_ms=700 + 13 * n,
            ttft_ms=180 + n,
        )
    failed(key, gpt, request_id="req-history-failed", at=now - timedelta(days=2, hours=3))
    assert_books_clean()
    yield Reseller(world=world, email=tenant.owner.email, key=key)
    assert_books_clean()


@pytest.fixture
def chromium_page(reseller: Reseller) -> Iterator[Page]:
    """A fresh page, opened after the rows are made (Playwright's sync API runs an event
    loop in this thread, where Django refuses database calls)."""
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        page = browser.new_page(viewport=DESKTOP)
        page.add_init_script(RECORD_VIOLATIONS)
        yield page
        browser.close()


def test_the_key_reports_work_in_a_browser_under_the_policy(
    server: ProxyServer, reseller: Reseller, chromium_page: Page
) -> None:
    page = chromium_page
    key = reseller.key
    month = f"{timezone.now().astimezone(key.tenant.zone):%Y-%m}"
    console: list[str] = []
    page.on("console", lambda message: console.append(message.text))

    def violations() -> list[str]:
        found = page.evaluate("window.__violations")
        return list(found) + [text for text in console if "Content Security Policy" in text]

    def visit(path: str) -> None:
        response = page.goto(f"{server.url}{path}")
        assert response is not None and response.status == 200, path
        assert "default-src 'self'" in response.headers["content-security-policy"]
        assert violations() == [], (path, violations())

    def shoot(name: str) -> None:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        width = page.viewport_size["width"] if page.viewport_size else 0
        page.screenshot(path=str(SCREENSHOTS / f"key-{name}-{width}.png"), full_page=True)

    def charts_drawn() -> list[dict[str, int]]:
        page.wait_for_function(
            "() => [...document.querySelectorAll('canvas[data-chart]')]"
            ".every((c) => window.Chart && window.Chart.getChart(c))"
        )
        charts = page.evaluate(CHARTS_DRAWN)
        assert len(charts) == 4
        for chart in charts:
            assert chart["drawn"] and chart["points"] > 0, charts
            assert chart["width"] > 0 and chart["height"] > 0, charts
        return charts

    # Signing in through the form, as a reseller does, lands where it was going.
    page.goto(f"{server.url}{page_url(key.pk, 'usage')}")
    page.fill("input[type=email]", reseller.email)
    page.fill("input[type=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{server.url}{page_url(key.pk, 'usage')}")
    assert violations() == [], violations()

    # Usage: four charts drawn, the figures in tables; a window swapped in by htmx.
    visit(page_url(key.pk, "usage"))
    charts_drawn()
    assert page.locator("#key-usage-by-model tbody tr").count() == 2
    shoot("usage")
    page.click("#key-usage a:has-text('7 days')")
    page.wait_for_url(f"{server.url}{page_url(key.pk, 'usage')}?window=7d")
    page.wait_for_selector("#key-usage a[aria-current='true']:has-text('7 days')")
    charts_drawn()
    assert page.locator(".site-header").count() == 1  # the fragment was swapped, not a page
    assert page.locator("#key-usage-by-day tbody tr").count() in (7, 8)
    assert violations() == [], violations()

    # Requests: the proxy's own calls and the history; filtered by model without a reload.
    visit(page_url(key.pk, "requests"))
    assert page.locator("#key-requests-table tbody tr").count() == 50
    assert page.locator("#key-requests .badge-bad").count() >= 1
    shoot("requests")
    page.fill("#key-requests-model", "claude-fake")
    page.click("#key-requests button[type=submit]")
    page.wait_for_url(f"{server.url}{page_url(key.pk, 'requests')}?model=claude-fake*")
    rows = page.locator("#key-requests-table tbody tr")
    expect(rows).to_have_count(HISTORY // 3)  # once htmx has swapped the results in
    assert all("claude-fake" in text for text in rows.all_inner_texts())
    assert violations() == [], violations()

    # The statement: another month picked in place (the picker's redirect, followed by
    # htmx), then printable, with its Print button shown by app.js.
    visit(page_url(key.pk, f"statements/{month}"))
    previous = page.locator("#key-statement-month option").nth(1).get_attribute("value")
    page.select_option("#key-statement-month", previous)
    page.click("#key-statement .month-form button[type=submit]")
    page.wait_for_url(f"{server.url}{page_url(key.pk, f'statements/{previous}')}")
    page.wait_for_selector(
        f"#key-statement-month option[value='{previous}'][selected]", state="attached"
    )
    assert page.locator(".site-header").count() == 1  # the fragment was swapped, not a page
    assert violations() == [], violations()
    visit(page_url(key.pk, f"statements/{month}"))
    expect(page.locator("button[data-print]")).to_be_visible()
    assert page.locator("#key-statement-by-day tbody tr").count() >= 1
    shoot("statement")
    page.emulate_media(media="print")
    for hidden in (".site-header", ".key-report-header", ".statement-controls", ".site-footer"):
        assert not page.is_visible(hidden), hidden
    assert page.is_visible("#key-statement-by-model")
    shoot("statement-print")
    page.emulate_media(media="screen")

    # On a phone: nothing wider than the screen; the wide tables scroll inside their box.
    page.set_viewport_size(PHONE)
    for name, report in (
        ("usage", "usage"),
        ("requests", "requests"),
        ("statement", f"statements/{month}"),
    ):
        visit(page_url(key.pk, report))
        if name == "usage":
            charts_drawn()
        assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"], name
        assert page.evaluate(WIDER_THAN_VIEWPORT) == [], name
        wraps = page.evaluate(TABLES_SCROLLING_INSIDE)
        assert wraps and all(w["overflow"] == "auto" for w in wraps), wraps
        if name != "statement":
            assert any(w["scrolls"] for w in wraps), (name, wraps)
        shoot(name)
    assert violations() == [], violations()

    # Without JavaScript: the same session, plain links and forms; no chart, no Print.
    browser = page.context.browser
    assert browser is not None
    plain = browser.new_context(java_script_enabled=False, viewport=DESKTOP)
    plain.add_cookies(page.context.cookies())  # type: ignore[arg-type] # the same fields
    bare = plain.new_page()
    bare.goto(f"{server.url}{page_url(key.pk, 'usage')}")
    assert bare.locator("#key-usage-by-model tbody tr").count() == 2
    bare.click("#key-usage a:has-text('90 days')")
    bare.wait_for_url(f"{server.url}{page_url(key.pk, 'usage')}?window=90d")
    bare.goto(f"{server.url}{page_url(key.pk, 'requests')}")
    bare.fill("#key-requests-model", "claude-fake")
    bare.click("#key-requests button[type=submit]")
    bare.wait_for_url(f"{server.url}{page_url(key.pk, 'requests')}?model=claude-fake*")
    assert bare.locator("#key-requests-table tbody tr").count() == HISTORY // 3
    bare.goto(f"{server.url}{page_url(key.pk, f'statements/{month}')}")
    assert not bare.is_visible("button[data-print]")
    bare.select_option("#key-statement-month", previous)
    bare.click("#key-statement .month-form button[type=submit]")
    bare.wait_for_url(f"{server.url}{page_url(key.pk, f'statements/{previous}')}")
    plain.close()

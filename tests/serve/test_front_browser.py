"""The front page and the API reference in a real browser (Chromium) under the strict
Content-Security-Policy, on a desktop and on a phone.

The server is the real one with its collected static files. Any CSP violation the browser
reports fails the test; so does a page wider than the phone's screen, and an API reference
whose JavaScript did not draw every operation of the schema or cannot call the API.
Skipped where Debian's ``chromium`` is not installed (``apt-get install chromium``).
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator

import httpx
import pytest
from django.core.management import call_command
from playwright.sync_api import Page, expect, sync_playwright

from accounts.models import Tenant
from accounts.services import IssuedToken
from tests.browser import CHROMIUM, RECORD_VIOLATIONS, SCREENSHOTS, needs_chromium
from tests.proxy.conftest import ProxyServer, start_proxy_server

__all__ = ["start_proxy_server"]  # the fixture, used here as in tests/proxy

WIDTHS = {"desktop": 1280, "phone": 390}

pytestmark = needs_chromium


@pytest.fixture(scope="module")
def server(start_proxy_server: Callable[..., ProxyServer]) -> ProxyServer:
    call_command("collectstatic", "--noinput", verbosity=0, stdout=io.StringIO())
    return start_proxy_server()


@pytest.fixture
def browser_page(transactional_db: None) -> Iterator[Callable[[int], Page]]:
    """``open_page(width)``: a fresh page that records CSP violations and console errors."""
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)

        def open_page(width: int) -> Page:
            page = browser.new_page(viewport={"width": width, "height": 900})
            page.add_init_script(RECORD_VIOLATIONS)
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.on(
                "console",
                lambda message: (
                    errors.append(message.text)
                    if "Content Security Policy" in message.text
                    else None
                ),
            )
            page.errors = errors  # type: ignore[attr-defined]
            return page

        yield open_page
        browser.close()


def violations(page: Page) -> list[str]:
    return list(page.evaluate("window.__violations")) + list(page.errors)  # type: ignore[attr-defined]


def fits(page: Page) -> bool:
    """No sideways scrolling: the page is no wider than the window."""
    return bool(page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"))


@pytest.mark.parametrize("device", WIDTHS)
def test_the_front_page_under_the_policy(
    server: ProxyServer, browser_page: Callable[[int], Page], device: str
) -> None:
    page = browser_page(WIDTHS[device])
    response = page.goto(f"{server.url}/")
    assert response is not None and response.status == 200
    assert "default-src 'self'" in response.headers["content-security-policy"]
    # The stylesheets from 'self' applied: Pico's buttons, the page's own layout.
    assert page.locator("a[role=button]", has_text="Sign in").is_visible()
    assert (
        page.evaluate("getComputedStyle(document.querySelector('.landing-doors')).display")
        == "grid"
    )
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"front-{device}.png"), full_page=True)
    assert fits(page)
    assert violations(page) == []

    page.click("text=Sign in")
    page.wait_for_url(f"{server.url}/dashboard/sign-in/")
    assert page.locator("input[type=email]").is_visible()
    page.go_back()
    page.click("text=API reference")
    page.wait_for_url(f"{server.url}/api/v1/docs/")
    page.wait_for_selector(".opblock")
    assert violations(page) == []


@pytest.fixture
def token(
    transactional_db: None, make_reseller: Callable[..., tuple[Tenant, IssuedToken]]
) -> IssuedToken:
    """A reseller's API token, made before the browser starts (Playwright's sync API runs an
    event loop in this thread, where Django refuses database calls)."""
    _, issued = make_reseller(balance="25")
    return issued


@pytest.mark.parametrize("device", WIDTHS)
def test_the_api_reference_draws_every_operation_and_calls_the_api(
    server: ProxyServer, token: IssuedToken, browser_page: Callable[[int], Page], device: str
) -> None:
    schema = httpx.get(f"{server.url}/api/v1/schema/?format=json").json()
    operations = sum(
        1
        for methods in schema["paths"].values()
        for method in methods
        if method in {"get", "post", "put", "patch", "delete"}
    )
    page = browser_page(WIDTHS[device])
    response = page.goto(f"{server.url}/api/v1/docs/")
    assert response is not None and response.status == 200
    assert response.headers["content-type"].startswith("text/html")
    page.wait_for_selector(".opblock")
    # (all of them: Swagger UI draws them after the page has loaded, not necessarily at once)
    expect(page.locator(".opblock")).to_have_count(operations)
    assert page.locator(".info .title", has_text="Tollgate reseller API").is_visible()
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"api-docs-{device}.png"))
    assert fits(page)
    assert violations(page) == []

    # Authorize with a reseller token, then try GET /api/v1/wallet from the page.
    page.click("button.authorize")
    page.fill(".auth-container input[type=text]", token.secret)
    page.click(".auth-btn-wrapper button.authorize")
    page.click("button.close-modal")
    wallet = page.locator(".opblock-get", has=page.locator("[data-path='/api/v1/wallet']"))
    wallet.locator(".opblock-summary").click()
    wallet.locator("button.try-out__btn").click()
    wallet.locator("button.execute").click()
    answered = wallet.locator(".live-responses-table tr.response")
    answered.wait_for()
    assert answered.locator(".response-col_status").inner_text().strip() == "200"
    assert '"balance": "25.00"' in answered.inner_text()
    page.screenshot(path=str(SCREENSHOTS / f"api-docs-try-{device}.png"), full_page=False)
    assert violations(page) == []

"""The operator's admin in a real browser (Chromium) under the strict Content-Security-Policy.

The server is the real one with its collected static files; the browser signs in through
the login form and opens pages whose JavaScript does the most (the theme toggle, the user
form's calendar and clock shortcuts and its two-box permission picker, a changelist's
action bar, the sidebar's filter). Any CSP
violation the browser reports fails the test, and so does admin JavaScript that did not
run. Skipped where Debian's ``chromium`` is not installed (``apt-get install chromium``).
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import User
from django.core.management import call_command
from playwright.sync_api import Page, sync_playwright

from accounts.models import Tenant
from billing.models import Wallet
from billing.selectors import wallet_for_tenant
from tests.browser import CHROMIUM, RECORD_VIOLATIONS, SCREENSHOTS, needs_chromium
from tests.proxy.conftest import ProxyServer, start_proxy_server

__all__ = ["start_proxy_server"]  # the fixture, used here as in tests/proxy

OPERATOR = "op@example.com"
PASSWORD = "correct-horse-battery-9"

pytestmark = needs_chromium


@pytest.fixture(scope="module")
def server(start_proxy_server: Callable[..., ProxyServer]) -> ProxyServer:
    # The admin's CSS and JavaScript, served by the server as in production.
    call_command("collectstatic", "--noinput", verbosity=0, stdout=io.StringIO())
    return start_proxy_server()


@pytest.fixture
def chromium_page(transactional_db: None) -> Iterator[Page]:
    """A fresh page; the rows a test needs are made first (Playwright's sync API runs an
    event loop in this thread, where Django refuses database calls)."""
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.add_init_script(RECORD_VIOLATIONS)
        yield page
        browser.close()


@pytest.fixture
def operator_and_wallet(
    transactional_db: None, make_reseller: Callable[..., tuple[Tenant, object]]
) -> tuple[User, Wallet]:
    operator = get_user_model().objects.create_superuser(
        username=OPERATOR, email=OPERATOR, password=PASSWORD
    )
    tenant, _ = make_reseller(balance="25")
    return operator, wallet_for_tenant(tenant=tenant)


def test_the_admin_works_under_the_policy(
    server: ProxyServer, operator_and_wallet: tuple[User, Wallet], chromium_page: Page
) -> None:
    operator, wallet = operator_and_wallet
    page = chromium_page
    console: list[str] = []
    page.on("console", lambda message: console.append(message.text))

    def violations() -> list[str]:
        found = page.evaluate("window.__violations")
        return list(found) + [text for text in console if "Content Security Policy" in text]

    def visit(path: str, name: str) -> None:
        response = page.goto(f"{server.url}{path}")
        assert response is not None and response.status == 200, path
        assert "default-src 'self'" in response.headers["content-security-policy"]
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / f"admin-{name}.png"), full_page=True)
        assert violations() == [], (path, violations())

    # Sign in through the form, as an operator does (the stylesheet from 'self' must have
    # applied: it gives the login box its fixed width).
    visit("/admin/login/?next=/admin/", "login")
    assert page.evaluate("getComputedStyle(document.querySelector('#container')).width") != "auto"
    page.fill("#id_username", OPERATOR)
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_url(f"{server.url}/admin/")
    assert violations() == []

    visit("/admin/", "index")
    # The theme toggle is the admin's own script: clicking it changes the theme.
    before = page.evaluate("document.documentElement.dataset.theme || 'auto'")
    page.click("button.theme-toggle")
    after = page.evaluate("document.documentElement.dataset.theme")
    assert after and after != before

    # The user form: the date and time shortcuts and the two-box permission picker are
    # built by admin JavaScript (DateTimeShortcuts.js, SelectFilter2.js).
    visit(f"/admin/auth/user/{operator.pk}/change/", "user")
    page.click("#id_date_joined_0 ~ span.datetimeshortcuts a:has-text('Today')")
    page.click("#id_date_joined_1 ~ span.datetimeshortcuts a:has-text('Now')")
    page.click("#calendarlink0")
    assert page.is_visible("#calendarbox0")
    assert page.locator("#id_user_permissions_from option").count() > 0
    page.click("#id_user_permissions_add_all")
    assert page.locator("#id_user_permissions_to option").count() > 0
    assert violations() == [], violations()

    # A changelist's action bar (actions.js) and the sidebar's filter (nav_sidebar.js).
    visit("/admin/auth/user/", "users")
    page.check("#action-toggle")
    assert page.inner_text(".action-counter") == "2 of 2 selected"  # operator, reseller
    page.fill("#nav-filter", "wallet")
    assert page.is_visible("tr.model-wallet") and not page.is_visible("tr.model-user")

    visit("/admin/billing/wallet/", "wallets")
    visit(f"/admin/billing/wallet/{wallet.pk}/credit/", "credit")
    visit("/admin/billing/modelprice/add/", "price-add")
    assert violations() == [], violations()

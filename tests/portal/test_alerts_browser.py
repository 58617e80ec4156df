"""The alerts page in a real browser (Debian's Chromium, headless) against the real server,
under the strict Content-Security-Policy: a signed-in client changes a key's alerts with
JavaScript off (a plain form) and on; a refused share shows its error. Any CSP violation
fails the test. Each page is photographed at 1280 and 390 px wide into var/screenshots/,
and at 390 px nothing may scroll sideways.
"""

from __future__ import annotations

import io
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.sessions.backends.db import SessionStore
from django.core.management import call_command
from playwright.sync_api import Page, ViewportSize, sync_playwright

from accounts.models import Tenant
from accounts.services import IssuedToken
from portal.access import SESSION_CLIENT, SESSION_SEEN
from portal.models import PortalBinding, PortalClient
from tests.portal.conftest import bound
from tests.portal.test_alerts import acme_reseller, prepaid_key, spend
from tests.proxy.conftest import ProxyServer, start_proxy_server

__all__ = ["start_proxy_server"]  # the fixture, used here as in tests/proxy

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SCREENSHOTS = Path(__file__).resolve().parents[2] / "var" / "screenshots"
PHONE: ViewportSize = {"width": 390, "height": 844}
DESKTOP: ViewportSize = {"width": 1280, "height": 900}

pytestmark = [
    pytest.mark.skipif(
        not Path(CHROMIUM).exists(), reason="needs Chromium (apt-get install chromium)"
    ),
    pytest.mark.usefixtures("books_balance"),
]

RECORD_VIOLATIONS = """
window.__violations = [];
document.addEventListener("securitypolicyviolation", (event) => {
  window.__violations.push(`${event.violatedDirective} ${event.blockedURI} ${event.sample}`);
});
"""

WIDEST = """
Array.from(document.querySelectorAll("body *"))
  .filter((el) => el.getBoundingClientRect().right > document.documentElement.clientWidth + 1)
  .slice(0, 5)
  .map((el) => `${el.tagName}.${el.className} ${Math.round(el.getBoundingClientRect().right)}`)
"""


@pytest.fixture(scope="module")
def server(start_proxy_server: Callable[..., ProxyServer]) -> ProxyServer:
    call_command("collectstatic", "--noinput", verbosity=0, stdout=io.StringIO())
    return start_proxy_server()


def signed_in_session(client: PortalClient) -> str:
    """A portal session for ``client`` as the code step leaves it; its cookie's value."""
    session = SessionStore()
    session[SESSION_CLIENT] = client.pk
    session[SESSION_SEEN] = int(time.time())
    session.create()
    assert session.session_key is not None
    return session.session_key


def console_of(page: Page) -> list[str]:
    """What the page writes to its console, as it writes it."""
    console: list[str] = []
    page.on("console", lambda message: console.append(message.text))
    return console


def check(page: Page, console: list[str], name: str) -> None:
    """No CSP violation; photographed at 1280 px and at 390 px, where nothing may scroll
    sideways. (Without JavaScript, the console alone reports violations.)"""
    try:
        violations = list(page.evaluate("window.__violations || []"))
    except Exception:  # noqa: BLE001 - JavaScript is off: the console still reports
        violations = []
    violations += [text for text in console if "Content Security Policy" in text]
    assert violations == [], (name, violations)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"portal-{name}-1280.png"), full_page=True)
    page.set_viewport_size(PHONE)
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= PHONE["width"], (name, width, page.evaluate(WIDEST))
    page.screenshot(path=str(SCREENSHOTS / f"portal-{name}-390.png"), full_page=True)
    page.set_viewport_size(DESKTOP)


def test_a_client_sets_a_keys_alerts_in_the_browser(
    transactional_db: None,
    make_reseller: Callable[..., tuple[Tenant, IssuedToken]],
    price: object,
    server: ProxyServer,
) -> None:
    # Everything in the database first: Playwright's sync API runs an event loop in this
    # thread, where Django refuses database calls.
    key = prepaid_key(acme_reseller(make_reseller))
    client = PortalClient.objects.create(email="client@example.com")
    binding = bound(client, key, alert_percent=80)
    spend(key, price, "85")  # type: ignore[arg-type]
    PortalBinding.objects.filter(pk=binding.pk).update(percent_alerted_at="2030-01-02T03:04Z")
    session_key = signed_in_session(client)
    alerts = f"{server.url}/portal/keys/{key.pk}/alerts/"

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        for javascript, tag in ((False, "alerts-nojs"), (True, "alerts")):
            context = chromium.new_context(viewport=DESKTOP, java_script_enabled=javascript)
            context.add_init_script(RECORD_VIOLATIONS)
            context.add_cookies(
                [
                    {
                        "name": settings.SESSION_COOKIE_NAME,
                        "value": session_key,
                        "url": server.url,
                    }
                ]
            )
            page = context.new_page()
            console = console_of(page)

            response = page.goto(alerts)
            assert response is not None and response.status == 200
            assert "default-src 'self'" in response.headers["content-security-policy"]
            panel = page.locator("#alerts").inner_text()
            # The second time, what the first saved: a new share, armed.
            shown = "At 50 %, not sent yet" if javascript else "At 80 %, sent on 2 Jan 2030, 03:04"
            assert shown in panel, panel
            assert "$85.00 of $100.00 used (85 %), $15.00 left" in page.inner_text("main")
            assert "$60.00" not in page.content() and "$51.00" not in page.content()
            check(page, console, tag)

            # A share out of range: the form again, with its error.
            page.get_by_label("this share of its budget").fill("101")
            with page.expect_response(alerts) as answer:
                page.get_by_role("button", name="Save alerts").click()
            assert answer.value.status == 400
            assert "Choose a whole number from 1 to 100." in page.inner_text("#alerts")
            check(page, console, f"{tag}-refused")

            # Saved: back to the key's page (the key page's view; its message shows there).
            percent = "90" if javascript else "50"
            page.get_by_label("this share of its budget").fill(percent)
            page.get_by_label("Email me when the key has nothing left").check()
            with page.expect_response(alerts) as answer:
                page.get_by_role("button", name="Save alerts").click()
            assert answer.value.status == 302
            assert answer.value.headers["location"] == f"/portal/keys/{key.pk}/"
            context.close()
        chromium.close()

    binding.refresh_from_db()
    assert (binding.alert_percent, binding.alert_exhausted) == (90, True)
    assert binding.percent_alerted_at is None

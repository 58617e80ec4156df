"""A new reseller's first minutes in a real browser (Chromium), under the strict
Content-Security-Policy: sign up, follow the emailed link, sign out and in again, turn on
two-factor sign-in with a code worked out from the key the page shows, and sign in with a
code. Once with JavaScript and once without (no step needs it). Any CSP violation fails the
test. Screenshots of the sign-in, code and security pages at 1280 and 390 px wide go to
var/screenshots/; at 390 px no page scrolls sideways.

Skipped where Debian's ``chromium`` is not installed (``apt-get install chromium``).
"""

from __future__ import annotations

import base64
import io
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from django.core.management import call_command
from django_otp.oath import TOTP

from tests.browser import Browser, browsers, needs_chromium
from tests.mailbox import file_email_env, wait_for_mail
from tests.proxy.conftest import ProxyServer, start_proxy_server

__all__ = ["start_proxy_server"]  # the fixture, used here as in tests/proxy

PASSWORD = "correct-horse-battery-9"
LOCKOUT_LIMIT = 3
LINK = re.compile(r"https?://\S+/dashboard/verify-email/\S+/")

pytestmark = needs_chromium


@pytest.fixture(scope="module")
def outbox(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("outbox")


@pytest.fixture(scope="module")
def server(start_proxy_server: Callable[..., ProxyServer], outbox: Path) -> ProxyServer:
    call_command("collectstatic", "--noinput", verbosity=0, stdout=io.StringIO())
    # The server's emails land as files the test reads, as a person reads their inbox.
    return start_proxy_server(
        **file_email_env(outbox),
        SIGNUP_OPEN="1",
        LOGIN_FAILURE_LIMIT=str(LOCKOUT_LIMIT),
    )


def latest_link(outbox: Path, email: str) -> str:
    return LINK.findall(wait_for_mail(outbox, to=email, having=LINK))[-1]


def code_from_key(key_text: str, *, steps_ahead: int = 0) -> str:
    """What an authenticator app shows for the key typed in by hand (RFC 6238)."""
    key = base64.b32decode(key_text.replace(" ", ""))
    totp = TOTP(key)
    totp.time = time.time() + steps_ahead * 30
    return f"{totp.token():06d}"


@pytest.fixture(params=[True, False], ids=["javascript", "no-javascript"])
def javascript(request: pytest.FixtureRequest) -> bool:
    return bool(request.param)


@pytest.fixture
def browser(transactional_db: None, server: ProxyServer, javascript: bool) -> Iterator[Browser]:
    with browsers(server.url, tag="account") as open_browser:
        yield open_browser(javascript=javascript, tag="account")


def test_sign_up_verify_turn_on_two_factor_and_sign_in_with_a_code(
    server: ProxyServer, outbox: Path, browser: Browser, javascript: bool
) -> None:
    page = browser.page
    email = f"new{time.time_ns() % 10**12}@example.com"

    def shoot(name: str) -> None:
        """The page at both widths (with JavaScript only: the markup is the same)."""
        if javascript:
            browser.check(name)
        else:
            browser.assert_clean()

    # Sign up.
    page.goto(f"{server.url}/dashboard/sign-in/")
    shoot("sign-in")
    page.click("text=Create an account")
    page.fill("#id_email", email)
    page.fill("#id_password", PASSWORD)
    page.fill("#id_display_name", "Fresh Reseller Ltd")
    shoot("sign-up")
    page.click("button:has-text('Create account')")
    page.wait_for_url(f"{server.url}/dashboard/verify-email/")
    page.locator("h1:has-text('Check your inbox')").wait_for()

    # Follow the emailed link; it signs in, on the overview.
    page.goto(latest_link(outbox, email))
    page.click("button:has-text('Verify and sign in')")
    page.wait_for_url(f"{server.url}/dashboard/")
    assert "Fresh Reseller Ltd" in page.content()
    assert "$0.00" in page.content()

    # Out and in again, the email typed in capitals.
    page.click("button:has-text('Sign out')")
    page.wait_for_url(f"{server.url}/dashboard/sign-in/")
    page.fill("input[type=email]", email.upper())
    page.fill("input[type=password]", PASSWORD)
    page.click("button:has-text('Sign in')")
    page.wait_for_url(f"{server.url}/dashboard/")

    # Turn on two-factor sign-in with the key shown as text.
    page.click("a:has-text('Security')")
    page.wait_for_url(f"{server.url}/dashboard/security/")
    shoot("security-off")
    page.click("button:has-text('Turn on two-factor sign-in')")
    page.wait_for_url(f"{server.url}/dashboard/security/two-factor/")
    assert page.locator("svg.qr-code").count() == 1
    key = page.inner_text("#totp-secret")
    shoot("two-factor-setup")
    page.fill("#id_code", code_from_key(key))
    page.click("button:has-text('Confirm and turn on')")
    page.wait_for_url(f"{server.url}/dashboard/security/backup-codes/")
    assert page.locator(".backup-codes li").count() == 10
    shoot("backup-codes")
    page.click("text=I've saved them")
    page.wait_for_url(f"{server.url}/dashboard/security/")
    assert "Backup codes left" in page.content()
    shoot("security-on")

    # Signing in now asks for a code after the password.
    page.click("button:has-text('Sign out')")
    page.fill("input[type=email]", email)
    page.fill("input[type=password]", PASSWORD)
    page.click("button:has-text('Sign in')")
    page.wait_for_url(re.compile(r".*/dashboard/sign-in/code/.*"))
    shoot("code")
    page.fill("#id_code", "000000")
    page.click("button:has-text('Verify and sign in')")
    page.locator("text=That code is not right").wait_for()
    time.sleep(1.1)  # django-otp's delay after one wrong code
    # The next period's code: the one confirming the setup may be this period's.
    page.fill("#id_code", code_from_key(key, steps_ahead=1))
    page.click("button:has-text('Verify and sign in')")
    page.wait_for_url(f"{server.url}/dashboard/")
    assert "Fresh Reseller Ltd" in page.content()
    browser.assert_clean()


@pytest.mark.parametrize("javascript", [True], ids=["javascript"])
def test_a_locked_out_sign_in_shows_a_page(server: ProxyServer, browser: Browser) -> None:
    """Wrong passwords up to the limit, then the page that says what happened (a 429).
    The test database is emptied after the test, and the lock with it."""
    page = browser.page
    for _ in range(LOCKOUT_LIMIT):
        page.goto(f"{server.url}/dashboard/sign-in/")
        page.fill("input[type=email]", "someone@example.com")
        page.fill("input[type=password]", "not-the-password")
        with page.expect_navigation() as navigation:
            page.click("button:has-text('Sign in')")
    response = navigation.value
    assert response is not None and response.status == 429
    page.locator("h1:has-text('Too many failed sign-ins')").wait_for()
    assert page.locator("a[href='/dashboard/password-reset/']").count() == 1
    browser.check("locked-out")

"""The alerts in a real browser (Debian's Chromium, headless) against the real server,
under the strict Content-Security-Policy: the delivery log, the settings' alert section
(saved, a new signing secret shown once), a key's own shares on its page; with JavaScript
off (plain forms) and on. Any CSP violation fails the test. Each page is photographed at
1280 and 390 px wide into var/screenshots/, and at 390 px nothing may scroll sideways.
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from django.core.management import call_command
from django.utils import timezone
from playwright.sync_api import expect

from accounts.services import user_password_ensure
from alerts.models import AlertDelivery, AlertSettings
from alerts.services import alerts_check
from billing.money import parse_usd
from billing.services import wallet_credit
from tests.alerts.conftest import prepaid_key, spend
from tests.browser import Browser, OpenBrowser, browsers, needs_chromium
from tests.dashboard.test_money_browser import EMAIL, PASSWORD
from tests.proxy.conftest import ProxyServer, start_proxy_server

__all__ = ["start_proxy_server"]  # the fixture, used here as in tests/proxy

pytestmark = [needs_chromium, pytest.mark.usefixtures("books_balance")]


@pytest.fixture(scope="module")
def server(start_proxy_server: Callable[..., ProxyServer]) -> ProxyServer:
    call_command("collectstatic", "--noinput", verbosity=0, stdout=io.StringIO())
    return start_proxy_server()


@pytest.fixture
def alerted(
    transactional_db: None, reseller: Any, price: Any, monkeypatch: pytest.MonkeyPatch
) -> str:
    """Alice's key past 80 %, its alert claimed: the email sent, the webhook failed after
    its tries (nothing is sent from here, and the server's own check finds nothing new).
    Her API token."""
    tenant, token = reseller
    user_password_ensure(user=tenant.owner, password=PASSWORD)
    AlertSettings.objects.create(
        tenant=tenant,
        webhook_url="https://93.184.216.34/tollgate/alerts",
        webhook_secret_encrypted="-",
        webhook_secret_last4="x9Zq",
    )
    wallet_credit(tenant=tenant, amount_nanos=parse_usd("200"), reason="test funds")
    key = prepaid_key(tenant)
    spend(key, price, "85")
    monkeypatch.setattr("alerts.services.check._enqueue", lambda ids: None)
    alerts_check()
    now = timezone.now()
    AlertDelivery.objects.filter(channel="email").update(
        status="sent", attempts=1, sent_at=now, target=tenant.owner.email
    )
    AlertDelivery.objects.filter(channel="webhook").update(
        status="failed",
        attempts=6,
        http_status=503,
        last_error="The webhook answered HTTP 503.",
        target="https://93.184.216.34/tollgate/alerts",
        next_attempt_at=None,
    )
    return str(token.secret)


@pytest.fixture
def browser(server: ProxyServer) -> Iterator[OpenBrowser]:
    with browsers(server.url, tag="alerts") as open_browser:
        yield open_browser


def api_get(b: Browser, token: str, path: str) -> Any:
    """The REST API's answer (the database is out of reach while the browser runs: its
    event loop is in this thread)."""
    response = httpx.get(
        f"{b.base_url}{path}", headers={"Authorization": f"Bearer {token}"}, timeout=10
    )
    assert response.status_code == 200
    return response.json()


@pytest.mark.parametrize("javascript", [False, True], ids=["no-js", "js"])
def test_a_reseller_reads_the_log_and_sets_alerts(
    alerted: str, browser: OpenBrowser, javascript: bool
) -> None:
    b = browser(javascript=javascript)
    page = b.page
    b.sign_in(EMAIL, PASSWORD)

    # The log: the email sent, the webhook failed with its last error.
    b.nav("Alerts", "/dashboard/alerts/")
    expect(page.locator("table.alert-log tbody tr")).to_have_count(2)
    log = page.locator("table.alert-log").inner_text()
    assert "Key “Client A” has used 80 % of its budget" in log
    assert "HTTP 503" in log and "Failed" in log and "Sent" in log
    b.check("log")
    page.get_by_label("Status").select_option("failed")
    page.get_by_role("button", name="Show").click()
    page.wait_for_url("**/dashboard/alerts/?status=failed*")
    expect(page.locator("table.alert-log tbody tr")).to_have_count(1)

    # The settings: thresholds and the wallet's alerts, saved by a plain form.
    page.get_by_role("link", name="Alert settings").click()
    page.wait_for_url(re.compile(r"/dashboard/settings/#alerts$"))
    # (90 and 100 %: the key, at 85 %, crosses none, so the server's own check sends nothing)
    page.get_by_label("Key alerts at").fill("90, 100")
    page.get_by_label("Wallet balance under ($)").fill("25")
    page.get_by_label("Wallet runway under (days)").fill("3")
    with page.expect_navigation():  # to the same address: wait_for_url would not wait
        page.get_by_role("button", name="Update alerts").click()
    assert page.url.endswith("/dashboard/settings/#alerts")
    assert "Alert settings saved." in page.locator(".messages").inner_text()
    settings = api_get(b, alerted, "/api/v1/alerts/settings")
    assert settings["key_thresholds"] == [90, 100]
    assert settings["wallet_balance_below"] == "25.00"
    b.check("settings")

    # A refused URL says why, on its field.
    page.get_by_label("Webhook URL").fill("http://169.254.169.254/latest/meta-data/")
    with page.expect_navigation():  # the form's answer, not the page it was sent from
        page.get_by_role("button", name="Update alerts").click()
    expect(page.locator("#alerts")).to_contain_text("Use an https:// URL.")
    b.check("settings-refused")

    # A new signing secret, shown this once.
    b.visit("/dashboard/settings/")
    page.get_by_role("button", name="New signing secret").click()
    secret = page.locator("#webhook-secret").inner_text().strip()
    assert secret.startswith("whsec_")
    # (shown by the page's script: waited for with JavaScript, hidden without)
    copy = page.get_by_role("button", name="Copy")
    if javascript:
        expect(copy).to_be_visible()
    else:
        expect(copy).to_be_hidden()
    b.check("secret")

    # A key's own shares, on its page.
    b.nav("Keys", "/dashboard/keys/")
    page.get_by_role("link", name="Client A").first.click()
    page.wait_for_url(re.compile(r"/dashboard/keys/[0-9]+/$"))
    panel = page.locator("#alerts")
    assert "At 90 %" in panel.inner_text() and "Armed" in panel.inner_text()  # the new default
    page.get_by_label("This key's own").check()
    page.get_by_label("This key's alerts at (%)").fill("95")
    page.get_by_role("button", name="Save the key's alerts").click()
    page.wait_for_url(re.compile(r"/dashboard/keys/[0-9]+/#alerts$"))
    assert "its own, at 95 %" in page.locator(".messages").inner_text()
    assert "At 95 %" in page.locator("#alerts").inner_text()
    key_id = page.url.split("/keys/")[1].split("/")[0]
    assert api_get(b, alerted, f"/api/v1/keys/{key_id}/alerts")["thresholds"] == [95]
    b.check("key")
    b.context.close()

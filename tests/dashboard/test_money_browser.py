"""The reseller's money and account pages in a real browser (Debian's Chromium, headless)
against the real server, under the strict Content-Security-Policy.

A reseller signs in and clicks through the overview, the wallet (filtering its ledger), the
earnings, the API tokens (creating one, whose secret then works on the REST API, and
revoking it, after which it does not) and the settings (changing the time zone): once with
JavaScript (charts drawn, htmx swapping the ledger's results), once without (every form is
a plain one). Any CSP violation fails the test. Each page is photographed at 1280 and 390
px wide into var/screenshots/, and at 390 px nothing may scroll sideways.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
import pytest
from django.core.management import call_command
from django.utils import timezone
from playwright.sync_api import expect

from accounts.models import Tenant
from accounts.services import user_password_ensure
from billing.models import LedgerEntry
from billing.money import Usage, parse_usd
from keys.models import ClientKey
from keys.services import key_create
from tests.browser import OpenBrowser, browsers, needs_chromium
from tests.keys.apis.conftest import prepaid_key
from tests.metering import charge
from tests.proxy.conftest import ProxyServer, start_proxy_server
from tests.usage.conftest import trace

__all__ = ["start_proxy_server"]  # the fixture, used here as in tests/proxy

EMAIL = "alice@example.com"
PASSWORD = "correct-horse-battery-9"

pytestmark = [
    needs_chromium,
    pytest.mark.usefixtures("books_balance"),
]


@pytest.fixture(scope="module")
def server(start_proxy_server: Callable[..., ProxyServer]) -> ProxyServer:
    # The pages' CSS and JavaScript, served by the server as in production.
    call_command("collectstatic", "--noinput", verbosity=0, stdout=io.StringIO())
    return start_proxy_server()


@dataclass
class Reseller:
    tenant: Tenant
    api_token: str


@pytest.fixture
def business(transactional_db: None, reseller: Any, outsider: Any, price: Any) -> Reseller:
    """The worked example's key with traffic over the last days, a wallet-funded key near
    its cap, a month of ledger history; made before the browser starts (Playwright's sync
    API runs an event loop in this thread, where Django refuses database calls)."""
    tenant, token = reseller
    user_password_ensure(user=tenant.owner, password=PASSWORD)
    acme = prepaid_key(tenant)
    team = key_create(
        tenant=tenant,
        actor=None,
        label="team-a",
        funding=ClientKey.Funding.WALLET,
        spend_cap_nanos=parse_usd("10"),
    ).key
    now = timezone.now()
    for n, (key, tokens) in enumerate([(acme, 12_000_000), (acme, 8_520_000), (team, 9_000_000)]):
        settled = charge(key=key, price=price, request_id=f"r{n}", usage=Usage(input_tokens=tokens))
        trace(
            key,
            now - timedelta(days=4 - 2 * n, minutes=5),
            request_id=f"r{n}",
            input_tokens=tokens,
            cost_nanos=settled.charged_cost_nanos,
            client_nanos=settled.charged_client_nanos,
        )
    # The ledger's history spread over the last weeks (entries are posted now).
    entries = list(LedgerEntry.objects.filter(wallet__tenant=tenant).order_by("id"))
    for age, entry in zip([20, 12, 3], entries, strict=False):
        LedgerEntry.objects.filter(pk=entry.pk).update(created_at=now - timedelta(days=age))
    return Reseller(tenant=tenant, api_token=token.secret)


@pytest.fixture
def browser(server: ProxyServer) -> Iterator[OpenBrowser]:
    # (Copying a token's secret reads the clipboard back.)
    with browsers(
        server.url, tag="money", permissions=["clipboard-read", "clipboard-write"]
    ) as open_browser:
        yield open_browser


def api_account(server: ProxyServer, secret: str) -> httpx.Response:
    return httpx.get(
        f"{server.url}/api/v1/account", headers={"Authorization": f"Bearer {secret}"}, timeout=10
    )


def test_a_reseller_clicks_through_the_money_pages(
    business: Reseller, browser: OpenBrowser, server: ProxyServer
) -> None:
    b = browser(javascript=True)
    page = b.page
    b.sign_in(EMAIL, PASSWORD)

    # The overview: figures, a drawn chart, the key near its cap linking to its page.
    assert page.locator(".stat", has_text="Wallet balance").inner_text().endswith("$131.00")
    assert "$13.68" in page.locator(".stat", has_text="All time").inner_text()
    page.wait_for_selector("canvas[data-chart-drawn='1']")
    near = page.locator(".near-limit a", has_text="team-a")
    assert near.get_attribute("href", timeout=1000) is not None
    assert page.get_by_role("link", name="New key").count() == 1
    b.check("overview")

    # The wallet: the ledger filtered by kind, swapped in place by htmx.
    b.nav("Wallet", "/dashboard/wallet/")
    page.wait_for_selector("canvas[data-chart-drawn='1']")
    assert page.locator("table.ledger tbody tr").count() == 3
    page.get_by_label("Kind").select_option("key_funding")
    page.get_by_role("button", name="Show").click()
    page.wait_for_url("**/dashboard/wallet/?kind=key_funding*")
    expect(page.locator("table.ledger tbody tr")).to_have_count(1)
    assert "Funding of key acme-corp-prod" in page.locator("table.ledger").inner_text()
    page.wait_for_selector("canvas[data-chart-drawn='1']")
    b.check("wallet")

    # Earnings: the last twelve months, this one's profit.
    b.nav("Earnings", "/dashboard/earnings/")
    page.wait_for_selector("canvas[data-chart-drawn='1']")
    assert page.locator("table tbody tr").count() >= 12
    assert "$13.68" in page.locator("section[aria-labelledby=keys-heading]").inner_text()
    b.check("earnings")

    # API tokens: create one (its secret works at once), then revoke it (it stops).
    b.nav("API tokens", "/dashboard/tokens/")
    page.get_by_label("Name").fill("ci-bot")
    page.get_by_role("button", name="Create token").click()
    secret = page.locator("#new-token-secret").inner_text().strip()
    assert secret.startswith("tgr-")
    copy = page.get_by_role("button", name="Copy")
    copy.click()
    assert page.evaluate("navigator.clipboard.readText()") == secret
    assert api_account(server, secret).status_code == 200
    b.check("tokens-created")
    page.get_by_role("link", name="Revoke ci-bot").click()
    page.wait_for_url("**/dashboard/tokens/*/revoke/")
    b.check("token-revoke")
    page.get_by_role("button", name="Revoke").click()
    page.wait_for_url(f"{server.url}/dashboard/tokens/")
    assert "is revoked" in page.locator(".messages").inner_text()
    assert api_account(server, secret).status_code == 401
    assert secret not in page.content()
    b.check("tokens")

    # Settings: the time zone, saved through the same rules as the API's.
    b.nav("Settings", "/dashboard/settings/")
    page.get_by_label("Time zone").select_option("Asia/Kolkata")
    with page.expect_navigation():  # to the same address: wait_for_url would not wait
        page.get_by_role("button", name="Save").click()
    assert page.url == f"{server.url}/dashboard/settings/"
    assert "Settings saved." in page.locator(".messages").inner_text()
    assert api_account(server, business.api_token).json()["timezone"] == "Asia/Kolkata"
    b.check("settings")
    b.context.close()


def test_the_forms_work_without_javascript(
    business: Reseller, browser: OpenBrowser, server: ProxyServer
) -> None:
    b = browser(javascript=False)
    page = b.page
    b.sign_in(EMAIL, PASSWORD)
    assert page.locator(".stat", has_text="Wallet balance").inner_text().endswith("$131.00")
    b.check("overview")

    b.nav("Wallet", "/dashboard/wallet/")
    page.get_by_label("Kind").select_option("usage")
    page.get_by_role("button", name="Show").click()
    page.wait_for_url("**/dashboard/wallet/?kind=usage*")
    expect(page.locator("table.ledger tbody tr")).to_have_count(1)
    b.check("wallet")

    b.nav("Earnings", "/dashboard/earnings/")
    this_month = f"{timezone.now():%Y-%m}"
    page.get_by_label("From", exact=True).fill(this_month)
    page.get_by_role("button", name="Show").click()
    page.wait_for_url(f"**/dashboard/earnings/?start={this_month}*")
    expect(page.locator("section[aria-labelledby=months-heading] tbody tr")).to_have_count(1)
    b.check("earnings")

    b.nav("API tokens", "/dashboard/tokens/")
    page.get_by_label("Name").fill("nightly")
    page.get_by_role("button", name="Create token").click()
    secret = page.locator("#new-token-secret").inner_text().strip()
    assert not page.get_by_role("button", name="Copy").is_visible()  # needs JavaScript
    assert api_account(server, secret).status_code == 200
    page.get_by_role("link", name="Revoke nightly").click()
    page.get_by_role("button", name="Revoke").click()
    page.wait_for_url(f"{server.url}/dashboard/tokens/")
    assert api_account(server, secret).status_code == 401
    b.check("tokens")

    b.nav("Settings", "/dashboard/settings/")
    page.get_by_label("Time zone").select_option("America/New_York")
    page.get_by_label("Support email").fill("help@acme.example")
    with page.expect_navigation():  # to the same address: wait_for_url would not wait
        page.get_by_role("button", name="Save").click()
    assert page.url == f"{server.url}/dashboard/settings/"
    account = api_account(server, business.api_token).json()
    assert (account["timezone"], account["support_email"]) == (
        "America/New_York",
        "help@acme.example",
    )
    b.check("settings")
    b.context.close()

"""PRODUCT.md section 3's worked example, clicked through in a real browser (Chromium)
against the real server, with JavaScript and without.

A reseller with a $200 wallet signs in, creates "acme-corp-prod" (client budget $100, cost
$60: the preview says $100 / $60 / 40 %), reads the secret shown once, and its client calls
the proxy with it through the official ``openai`` SDK (against a fake provider) for
exactly $34.20 of client price ($20.52 of cost). The key's page then shows $34.20 spent,
$65.80 remaining and $13.68 profit; a $50 top-up previews $30.00 from the wallet; deleting
states and pays a $69.48 refund; the wallet shows $179.48 and ``check_ledger`` is clean.

Every page is checked for Content-Security-Policy violations (none allowed) and, at a
phone's 390 px, for sideways scrolling; screenshots at 1280 and 390 px go to
var/screenshots/. Skipped where Debian's ``chromium`` is not installed.
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable

import pytest
from django.core.management import call_command
from playwright.sync_api import Page, expect

from accounts.models import Tenant
from accounts.services import user_password_ensure
from billing.money import parse_usd
from billing.selectors import wallet_for_tenant
from keys.models import ClientKey
from tests.browser import Browser, browsers, needs_chromium
from tests.proxy.conftest import ProxyServer, fake_upstream, start_proxy_server
from tests.proxy.upstream_fake import FakeUpstream
from tests.worked_example import fake_provider_priced, spend_34_20

__all__ = ["fake_upstream", "start_proxy_server"]  # fixtures, used here as in tests/proxy

EMAIL = "reseller@example.com"
PASSWORD = "correct-horse-battery-9"


pytestmark = [
    needs_chromium,
    pytest.mark.usefixtures("books_balance"),
]

# The machine that runs the suite may be busy: wait longer than Playwright's 5 s for what a
# page shows (a live preview waits 400 ms for the typing to stop, then asks the server).
expect.set_options(timeout=15_000)


@pytest.fixture(scope="module")
def server(start_proxy_server: Callable[..., ProxyServer]) -> ProxyServer:
    # The pages' CSS and JavaScript, served by the server as in production.
    call_command("collectstatic", "--noinput", verbosity=0, stdout=io.StringIO())
    return start_proxy_server()


@pytest.fixture
def reseller_with_200(
    transactional_db: None,
    make_reseller: Callable[..., tuple[Tenant, object]],
    fake_upstream: FakeUpstream,
) -> Tenant:
    """The rows first: Playwright's sync API runs an event loop in this thread, where
    Django refuses database calls."""
    tenant, _ = make_reseller(email=EMAIL, balance="200")
    user_password_ensure(user=tenant.owner, password=PASSWORD)
    fake_provider_priced(fake_upstream)
    return tenant


def stat(page: Page, label: str) -> str:
    """The figure of a stat card on a key's page (its own figures, before the usage report
    that loads below them with the same labels)."""
    card = page.locator(".stat", has=page.locator(".stat-label", has_text=re.compile(f"^{label}$")))
    return card.locator(".stat-value").first.inner_text()


def run_worked_example(b: Browser) -> str:
    """Click through the worked example; returns the key's secret."""
    page, base = b.page, b.base_url
    js = b.javascript

    b.sign_in(EMAIL, PASSWORD)

    # The keys list, empty, and "New key".
    page.get_by_role("link", name="Keys", exact=True).click()
    expect(page.get_by_text("No keys yet")).to_be_visible()
    page.get_by_role("link", name="New key").click()
    page.wait_for_url(f"{base}/dashboard/keys/new/")

    if js:
        # Only the chosen funding's inputs show; without JavaScript both do.
        wallet_terms = page.locator("fieldset[data-funding=wallet]")
        expect(wallet_terms).to_be_hidden()
        page.get_by_label("Wallet: each request draws from your wallet").check()
        expect(wallet_terms).to_be_visible()
        expect(page.locator("fieldset[data-funding=prepaid]")).to_be_hidden()
        page.get_by_label("Prepaid: set the client's budget aside now").check()
        expect(wallet_terms).to_be_hidden()

    # The preview before anything is saved: live with htmx, a page of its own without.
    page.fill("input[name=label]", "acme-corp-prod")
    page.fill("input[name=client_budget]", "100")
    page.fill("input[name=your_cost]", "60")
    if not js:
        page.get_by_role("button", name="Create key").click()
        page.wait_for_load_state()
    preview = page.locator("#key-preview")
    expect(preview).to_contain_text("40 %")
    expect(preview).to_contain_text("$100.00")
    expect(preview).to_contain_text("$60.00")
    expect(preview).to_contain_text("$140.00")
    b.check("create-preview")
    page.get_by_role("button", name="Create key").click()

    # The secret, once, and the message for the client.
    page.wait_for_url(re.compile(r"/dashboard/keys/\d+/created/$"))
    secret = page.locator("#new-key-secret").inner_text().strip()
    assert secret.startswith("tg-")
    expect(page.locator("#handoff-message")).to_have_value(re.compile(re.escape(secret)))
    if js:
        expect(page.get_by_role("button", name="Copy key")).to_be_visible()
    b.check("secret")

    # The client spends $34.20 through the proxy with that secret.
    spend_34_20(base, secret)

    # The list, then the key's page through its label.
    page.goto(f"{base}/dashboard/keys/")
    row = page.locator("tr", has=page.get_by_role("link", name="acme-corp-prod"))
    expect(row).to_contain_text("$34.20 of $100.00")
    expect(row).to_contain_text("40 % margin")
    b.check("key-list")
    if js:
        # The filters answer as the reseller types (htmx swaps the results).
        page.get_by_label("Search labels").fill("globex")
        expect(page.get_by_text("No key matches these filters.")).to_be_visible()
        page.get_by_label("Search labels").fill("acme")
        expect(row).to_be_visible()
    page.get_by_role("link", name="acme-corp-prod").click()
    page.wait_for_url(re.compile(r"/dashboard/keys/\d+/$"))
    assert stat(page, "Spent") == "$34.20"
    assert stat(page, "Remaining") == "$65.80"
    assert stat(page, "Cost consumed") == "$20.52"
    assert stat(page, "Profit") == "$13.68"
    b.check("key-page")

    # Top up $50: the wallet debit ($30.00) before confirming.
    page.fill("input[name=client_amount]", "50")
    if not js:
        page.get_by_role("button", name="Top up").click()
        page.wait_for_url(re.compile(r"/top-up/$"))
    expect(page.locator("#top-up-preview")).to_contain_text("$30.00")
    b.check("top-up-preview")
    page.get_by_role("button", name="Top up").click()
    page.wait_for_url(re.compile(r"/dashboard/keys/\d+/$"))
    expect(page.get_by_text("$30.00 left your wallet")).to_be_visible()
    assert stat(page, "Client budget") == "$150.00"

    # Delete: a confirmation stating the refund, then a second "Delete".
    page.get_by_role("button", name="Delete").click()
    page.wait_for_url(re.compile(r"/delete/"))
    expect(page.get_by_text("$69.48 will be refunded to your wallet")).to_be_visible()
    b.check("delete")
    page.get_by_role("button", name="Delete").click()
    page.wait_for_url(re.compile(r"/dashboard/keys/\d+/$"))
    expect(page.get_by_text("$69.48 was refunded to your wallet")).to_be_visible()
    expect(page.locator(".key-meta")).to_contain_text("Deleted")

    # The wallet shows it: $200 − $60 − $30 + $69.48.
    page.get_by_role("link", name="Overview").click()
    expect(page.locator(".stats").first).to_contain_text("$179.48")
    b.assert_clean()
    return secret


def assert_books(tenant: Tenant) -> None:
    assert wallet_for_tenant(tenant=tenant).balance_nanos == parse_usd("179.48")
    key = ClientKey.objects.get(tenant=tenant)
    assert key.status == ClientKey.Status.DELETED
    assert (key.client_spent_nanos, key.cost_spent_nanos) == (
        parse_usd("34.20"),
        parse_usd("20.52"),
    )
    assert key.cost_refunded_nanos == parse_usd("69.48")
    call_command("check_ledger", stdout=io.StringIO())  # raises CommandError on a mismatch


def test_the_worked_example_by_clicking(server: ProxyServer, reseller_with_200: Tenant) -> None:
    # The browser closed before the database is read (see tests/browser.py).
    with browsers(server.url, tag="keys") as open_browser:
        run_worked_example(open_browser(javascript=True))
    assert_books(reseller_with_200)


def test_the_worked_example_without_javascript(
    server: ProxyServer, reseller_with_200: Tenant
) -> None:
    with browsers(server.url, tag="keys") as open_browser:
        run_worked_example(open_browser(javascript=False))
    assert_books(reseller_with_200)

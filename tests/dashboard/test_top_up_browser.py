"""A card top-up in a real browser (Debian's Chromium, headless) against the real server,
which talks to the fake Stripe (tests/billing/stripe_fake.py) over HTTP.

The reseller clicks "Top up" on the wallet page, sees the fee and the total, submits, lands
on the fake's checkout page (the server's form posts through to it: its
Content-Security-Policy must allow that), pays, comes back to the top-up's page, which says
pending; a signed webhook is posted to the server, and the page turns to credited by itself
(htmx) or on "Reload" (without JavaScript). Any CSP violation fails the test; each of our
pages is photographed at 1280 and 390 px into var/screenshots/, and at 390 px nothing may
scroll sideways.
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from django.core.management import call_command
from playwright.sync_api import expect

from accounts.models import Tenant
from accounts.services import user_password_ensure
from billing.money import parse_usd
from billing.services import wallet_credit
from billing.stripe_api import CheckoutSession
from billing.top_ups import top_up_create, top_up_refund_record, top_up_session_settle
from keys.services import key_create
from tests.billing.stripe_fake import (
    SECRET_KEY,
    WEBHOOK_PATH,
    WEBHOOK_SECRET,
    StripeFake,
    event,
    signed,
    stripe_fake,
    stripe_fake_server,
)
from tests.browser import Browser, OpenBrowser, browsers, needs_chromium
from tests.proxy.conftest import ProxyServer, start_proxy_server

__all__ = ["start_proxy_server", "stripe_fake", "stripe_fake_server"]  # fixtures

EMAIL = "alice@example.com"
PASSWORD = "correct-horse-battery-9"

pytestmark = [needs_chromium, pytest.mark.usefixtures("books_balance")]


@pytest.fixture(scope="module")
def server(
    start_proxy_server: Callable[..., ProxyServer], stripe_fake_server: StripeFake
) -> ProxyServer:
    call_command("collectstatic", "--noinput", verbosity=0, stdout=io.StringIO())
    return start_proxy_server(
        STRIPE_SECRET_KEY=SECRET_KEY,
        STRIPE_API_BASE=stripe_fake_server.url,
        STRIPE_WEBHOOK_SECRET=WEBHOOK_SECRET,
        STRIPE_CHECKOUT_ORIGIN=stripe_fake_server.url,
        TOP_UP_FEE_PERCENT="2.9",
        TOP_UP_FEE_FIXED="0.30",
    )


@pytest.fixture
def reseller_tenant(transactional_db: None, reseller: Any) -> Tenant:
    """Made before the browser starts (Playwright's sync API runs an event loop in this
    thread, where Django refuses database calls)."""
    tenant = reseller[0]
    user_password_ensure(user=tenant.owner, password=PASSWORD)
    wallet_credit(tenant=tenant, amount_nanos=parse_usd("10"), reason="opening credit")
    return tenant


@pytest.fixture
def browser(server: ProxyServer) -> Iterator[OpenBrowser]:
    with browsers(server.url, tag="top-up") as open_browser:
        yield open_browser


def webhook(server: ProxyServer, fake: StripeFake, session_id: str) -> httpx.Response:
    """Stripe telling the server the session completed, signed as Stripe signs it."""
    body, header = signed(event("checkout.session.completed", fake.session(session_id)))
    return httpx.post(
        f"{server.url}{WEBHOOK_PATH}",
        content=body,
        headers={"Stripe-Signature": header, "Content-Type": "application/json"},
        timeout=10,
    )


def pay_at_the_fake(b: Browser, fake: StripeFake) -> str:
    """On the fake's checkout page: pay, and come back. Returns the session id."""
    page = b.page
    page.wait_for_url(f"{fake.url}/c/pay/cs_test_*")
    session_id = page.url.rsplit("/", 1)[1]
    expect(page.locator("#amount")).to_have_text("Pay $51.75")
    page.get_by_role("button", name="Pay").click()
    page.wait_for_url(re.compile(rf"{re.escape(b.base_url)}/dashboard/wallet/top-ups/\d+/$"))
    return session_id


def test_a_reseller_tops_up_by_card_and_sees_it_credited(
    reseller_tenant: Tenant,
    browser: OpenBrowser,
    server: ProxyServer,
    stripe_fake_server: StripeFake,
) -> None:
    b = browser(javascript=True)
    page = b.page
    b.sign_in(EMAIL, PASSWORD)

    page.get_by_role("navigation").get_by_role("link", name="Wallet", exact=True).click()
    page.wait_for_url(f"{server.url}/dashboard/wallet/")
    page.get_by_role("button", name="Top up").click()
    page.wait_for_url(f"{server.url}/dashboard/wallet/top-up/")
    assert "card fee: 2.9 % + $0.30" in page.locator("article").inner_text()

    # The fee and the total follow the typing (htmx), before anything is paid.
    page.get_by_label("Amount ($)").fill("50")
    expect(page.locator("#top-up-preview")).to_contain_text(
        re.compile(r"To your wallet\s+\$50\.00\s+Card fee\s+\$1\.75\s+You pay\s+\$51\.75"),
        use_inner_text=True,
    )
    b.check("form")

    page.get_by_role("button", name="Top up").click()
    session_id = pay_at_the_fake(b, stripe_fake_server)

    status = page.locator("#top-up-status")
    expect(status).to_contain_text("Waiting for Stripe to confirm the payment.")
    b.check("pending")

    assert webhook(server, stripe_fake_server, session_id).status_code == 200
    # htmx asks every 2 seconds: the page turns to credited by itself.
    expect(status).to_contain_text(
        "Your wallet was credited $50.00. It now holds $60.00.", timeout=10_000
    )
    b.check("credited")

    page.get_by_role("link", name="Back to the wallet").click()
    page.wait_for_url(f"{server.url}/dashboard/wallet/")
    assert "$60.00" in page.locator(".stats").inner_text()
    assert "Credited" in page.locator("table.top-ups").inner_text()
    b.check("wallet")
    b.context.close()


def test_without_javascript_the_preview_then_the_reload_link(
    reseller_tenant: Tenant,
    browser: OpenBrowser,
    server: ProxyServer,
    stripe_fake_server: StripeFake,
) -> None:
    b = browser(javascript=False)
    page = b.page
    b.sign_in(EMAIL, PASSWORD)
    page.goto(f"{server.url}/dashboard/wallet/top-up/")

    page.get_by_label("Amount ($)").fill("50")
    page.get_by_role("button", name="Top up").click()  # the preview, a page of its own
    expect(page.locator("#top-up-preview")).to_contain_text(
        re.compile(r"You pay\s+\$51\.75"), use_inner_text=True
    )
    b.check("preview")
    page.get_by_role("button", name="Top up").click()  # confirmed: off to Stripe
    session_id = pay_at_the_fake(b, stripe_fake_server)

    assert "Waiting for Stripe" in page.locator("#top-up-status").inner_text()
    b.check("pending")
    assert webhook(server, stripe_fake_server, session_id).status_code == 200
    page.get_by_role("link", name="Reload").click()
    expect(page.locator("#top-up-status")).to_contain_text("Your wallet was credited $50.00.")
    b.check("credited")
    b.context.close()


@pytest.fixture
def short_tenant(reseller_tenant: Tenant, stripe_fake: StripeFake) -> Tenant:
    """The reseller's earlier $40 top-up, credited, spent into a key, then refunded in full:
    the wallet could give back only the $10 it had, so $30 is short. Made through the
    services before the browser starts."""
    top_up = top_up_create(tenant=reseller_tenant, actor=None, amount_nanos=parse_usd("40"))
    session = stripe_fake.complete(top_up.stripe_session_id)
    top_up_session_settle(session=CheckoutSession.from_stripe(session))
    key_create(
        tenant=reseller_tenant,
        actor=None,
        label="spent",
        client_budget_nanos=parse_usd("40"),
        your_cost_nanos=parse_usd("40"),
    )
    top_up_refund_record(
        payment_intent=str(session["payment_intent"]),
        refunded_cents=4000,
        currency="usd",
        reference="ch_test_refund",
    )
    top_up.refresh_from_db()
    assert top_up.shortfall_nanos == parse_usd("30")
    return reseller_tenant


def test_a_top_up_that_paid_an_earlier_shortfall_says_so(
    short_tenant: Tenant,
    browser: OpenBrowser,
    server: ProxyServer,
    stripe_fake_server: StripeFake,
) -> None:
    b = browser(javascript=True)
    b.tag = "top-up-shortfall"
    page = b.page
    b.sign_in(EMAIL, PASSWORD)
    page.goto(f"{server.url}/dashboard/wallet/top-up/")
    page.get_by_label("Amount ($)").fill("50")
    expect(page.locator("#top-up-preview")).to_contain_text("You pay")
    page.get_by_role("button", name="Top up").click()
    session_id = pay_at_the_fake(b, stripe_fake_server)

    assert webhook(server, stripe_fake_server, session_id).status_code == 200

    status = page.locator("#top-up-status")
    expect(status).to_contain_text(
        "Your wallet was credited $50.00, of which $30.00 went to what an earlier top-up's "
        "refund or dispute could not take back. It now holds $20.00.",
        timeout=10_000,
    )
    assert re.search(r"Went to an earlier shortfall\s+\$30\.00", status.inner_text())
    b.check("credited")
    b.context.close()

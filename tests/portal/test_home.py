"""The portal's home page: the email form for a visitor, a card per bound key for a signed-in
client (client prices, the reseller's name), and the form that binds another key."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal

import pytest
from django.test import Client
from django.utils import timezone

from accounts.models import Tenant
from accounts.services import IssuedToken, tenant_suspend
from billing.models import ModelPrice
from billing.money import parse_usd
from billing.periods import period_index
from keys.models import ClientKey
from keys.services import IssuedKey, key_create, key_update
from tests.dashboard.traffic import served
from tests.keys.factories import WalletKeyFactory
from tests.portal.conftest import bound, portal_session

pytestmark = pytest.mark.django_db

Reseller = Callable[..., tuple[Tenant, IssuedToken]]


def acme(make_reseller: Reseller) -> Tenant:
    tenant, _ = make_reseller(email="acme@example.com", balance="200")
    Tenant.objects.filter(pk=tenant.pk).update(name="Acme AI", support_email="help@acme.example")
    tenant.refresh_from_db()
    return tenant


def worked_example_key(tenant: Tenant) -> IssuedKey:
    """Client budget $100 at a cost of $60, $34.20 of it spent (the product's example)."""
    issued = key_create(
        tenant=tenant,
        actor=None,
        label="acme-corp-prod",
        client_budget_nanos=parse_usd(Decimal("100")),
        your_cost_nanos=parse_usd(Decimal("60")),
    )
    ClientKey.objects.filter(pk=issued.key.pk).update(
        client_spent_nanos=parse_usd("34.20"), cost_spent_nanos=parse_usd("20.52")
    )
    return issued


def test_a_visitor_is_asked_for_an_email_and_told_why() -> None:
    page = Client().get("/portal/")
    html = page.content.decode()
    assert page.status_code == 200
    assert "See what an API key you were given has left" in html
    assert "we email you a 6-digit code" in html and "No password" in html
    assert re.search(
        r'<input type="email" name="email"[^>]*autocomplete="email"[^>]*required', html
    )
    assert 'name="csrfmiddlewaretoken"' in html
    assert 'name="key"' not in html


def test_a_new_client_sees_no_keys_yet_and_the_bind_form() -> None:
    browser, _ = portal_session("ann@example.com")
    page = browser.get("/portal/")
    html = page.content.decode()
    assert page.status_code == 200
    assert "No keys yet" in html
    assert re.search(
        r'<input type="text" name="key"[^>]*autocomplete="off"[^>]*spellcheck="false"', html
    )
    assert 'action="/portal/keys/bind/"' in html
    assert "no-store" in page["Cache-Control"]


def test_a_card_shows_a_key_in_client_prices_under_its_reseller(
    make_reseller: Reseller, books_balance: None
) -> None:
    tenant = acme(make_reseller)
    issued = worked_example_key(tenant)
    browser, client = portal_session("ann@example.com")
    bound(client, issued.key)
    html = browser.get("/portal/").content.decode()
    key = issued.key
    assert "No keys yet" not in html
    assert f'id="key-{key.pk}"' in html
    assert f'href="/portal/keys/{key.pk}/"' in html
    assert "acme-corp-prod" in html
    assert f"{key.prefix}…{key.last4}" in html
    assert 'class="badge badge-good">Active<' in html
    assert "Acme AI" in html and 'href="mailto:help@acme.example"' in html
    # Remaining of the budget, with its bar (34 % used), and what was spent.
    assert "$65.80" in html and "$100.00" in html and "$34.20" in html
    assert re.search(r'<progress class=""\s+value="34" max="100"', html)
    # Never the reseller's side of it: $60.00 cost, $20.52 consumed, $13.68 profit.
    for amount in ("$60.00", "$20.52", "$13.68"):
        assert amount not in html
    for word in ("cost", "profit", "margin", "ratio"):
        assert word not in html.lower()


def test_a_card_shows_the_runway_at_the_last_week_s_pace(
    make_reseller: Reseller, price: ModelPrice, books_balance: None
) -> None:
    tenant = acme(make_reseller)
    key = key_create(
        tenant=tenant,
        actor=None,
        label="busy",
        client_budget_nanos=parse_usd(Decimal("100")),
        your_cost_nanos=parse_usd(Decimal("60")),
    ).key
    browser, client = portal_session("ann@example.com")
    bound(client, key)
    idle = browser.get("/portal/").content.decode()
    assert "No spend in the last 7 days" in idle and "At the last 7 days" not in idle
    # 2.1M output tokens at $2/M cost $4.20, $7.00 to the client: $1.00 a day over the
    # last 7 days, so the $93.00 left lasts 93 days.
    served(
        key,
        price,
        request_id="req-1",
        at=timezone.now() - timedelta(days=1),
        output_tokens=2_100_000,
    )
    html = browser.get("/portal/").content.decode()
    assert "$93.00" in html and "$7.00" in html
    assert "About 93 days" in html and "Unused" not in html
    assert "At the last 7 days" in html
    assert "$4.20" not in html


def test_a_wallet_key_shows_its_cap_or_that_it_has_none(make_reseller: Reseller) -> None:
    tenant = acme(make_reseller)
    capped = WalletKeyFactory.create(
        tenant=tenant,
        label="capped",
        spend_cap_nanos=parse_usd("20"),
        budget_period=ClientKey.BudgetPeriod.MONTHLY,
        period_client_spent_nanos=parse_usd("17"),
        period_index=period_index(ClientKey.BudgetPeriod.MONTHLY, timezone.now()),
    )
    uncapped = WalletKeyFactory.create(tenant=tenant, label="uncapped")
    browser, client = portal_session("ann@example.com")
    bound(client, capped)
    bound(client, uncapped)
    html = browser.get("/portal/").content.decode()
    assert "$3.00" in html and "left of $20.00 spending cap this month" in html
    assert re.search(r'<progress class="bar-warn"\s+value="85"', html)
    assert "No spending cap" in html


def test_a_card_says_when_a_key_stopped_working(
    make_reseller: Reseller, books_balance: None
) -> None:
    tenant = acme(make_reseller)
    revoked = worked_example_key(tenant).key
    key_update(tenant=tenant, actor=None, key_id=revoked.pk, changes={"status": "revoked"})
    other, _ = make_reseller(email="other@example.com", balance="100")
    suspended = key_create(
        tenant=other,
        actor=None,
        label="paused-one",
        client_budget_nanos=parse_usd("10"),
        your_cost_nanos=parse_usd("10"),
    ).key
    tenant_suspend(tenant=other, actor=None)
    browser, client = portal_session("ann@example.com")
    bound(client, revoked)
    bound(client, suspended)
    html = browser.get("/portal/").content.decode()
    assert 'class="badge badge-warn">Revoked<' in html
    assert 'class="badge badge-bad">Suspended<' in html


def test_a_client_sees_only_its_own_bindings(make_reseller: Reseller, books_balance: None) -> None:
    tenant = acme(make_reseller)
    mine = worked_example_key(tenant).key
    theirs = key_create(
        tenant=tenant,
        actor=None,
        label="bobs-key",
        client_budget_nanos=parse_usd("10"),
        your_cost_nanos=parse_usd("5"),
    ).key
    browser, ann = portal_session("ann@example.com")
    _, bob = portal_session("bob@example.com")
    bound(ann, mine)
    bound(bob, theirs)
    html = browser.get("/portal/").content.decode()
    assert "acme-corp-prod" in html
    assert "bobs-key" not in html
    assert f"/portal/keys/{theirs.pk}/" not in html

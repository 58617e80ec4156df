"""Binding a key by pasting its secret: only a working key binds, whoever's it is; every
other secret gets one message; attempts are throttled; binding twice changes nothing."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from datetime import timedelta
from decimal import Decimal

import pytest
from django.core.cache import cache
from django.http import Http404, HttpResponse
from django.test import Client
from django.utils import timezone
from pytest_django.fixtures import Settings

from accounts.models import Tenant
from accounts.services import IssuedToken, tenant_suspend
from billing.money import parse_usd
from keys.models import ClientKey
from keys.selectors import key_for_any_secret
from keys.services import IssuedKey, key_create, key_delete, key_update
from portal.exceptions import BindThrottled, KeyNotBindable
from portal.models import PortalBinding, PortalClient
from portal.services import key_bind, key_unbind
from tests.portal.conftest import bound, portal_session

pytestmark = pytest.mark.django_db

NOT_BINDABLE = b"That key is not recognised or no longer active."

Reseller = Callable[..., tuple[Tenant, IssuedToken]]


@pytest.fixture(autouse=True)
def fresh_counts() -> Iterator[None]:
    """No bind counts left by another test (on Redis the cache outlives a test)."""
    cache.clear()
    yield
    cache.clear()


def prepaid_key(tenant: Tenant, label: str = "acme-corp-prod", **terms: object) -> IssuedKey:
    """A key funded at client budget $100, cost $60 (ratio 0.6)."""
    return key_create(
        tenant=tenant,
        actor=None,
        label=label,
        client_budget_nanos=parse_usd(Decimal("100")),
        your_cost_nanos=parse_usd(Decimal("60")),
        **terms,  # type: ignore[arg-type]
    )


def paste(browser: Client, secret: str) -> HttpResponse:
    return browser.post("/portal/keys/bind/", {"key": secret})  # type: ignore[return-value]


def test_pasting_a_working_key_binds_it(make_reseller: Reseller, books_balance: None) -> None:
    tenant, _ = make_reseller(balance="200")
    issued = prepaid_key(tenant)
    browser, client = portal_session("ann@example.com")
    answer = browser.post("/portal/keys/bind/", {"key": f"  {issued.secret}\n"})
    assert answer.status_code == 302
    assert answer["Location"] == f"/portal/#key-{issued.key.pk}"
    assert PortalBinding.objects.filter(client=client, key=issued.key).count() == 1
    home = browser.get("/portal/")
    assert "Key “acme-corp-prod” added." in home.content.decode()
    assert f'href="/portal/keys/{issued.key.pk}/"'.encode() in home.content


@pytest.mark.parametrize(
    "case", ["unknown", "wrong-digest", "revoked", "deleted", "expired", "suspended"]
)
def test_a_key_that_does_not_work_is_refused_with_one_message(
    case: str, make_reseller: Reseller, books_balance: None
) -> None:
    tenant, _ = make_reseller(balance="200")
    issued = prepaid_key(tenant)
    secret = issued.secret
    if case == "unknown":
        secret = "tg-" + "A" * 43
    elif case == "wrong-digest":
        # The right prefix (found by the index), the wrong rest.
        secret = issued.secret[:-4] + ("AAAA" if not issued.secret.endswith("AAAA") else "BBBB")
    elif case == "revoked":
        key_update(tenant=tenant, actor=None, key_id=issued.key.pk, changes={"status": "revoked"})
    elif case == "deleted":
        key_delete(tenant=tenant, actor=None, key_id=issued.key.pk)
    elif case == "expired":
        ClientKey.objects.filter(pk=issued.key.pk).update(
            expires_at=timezone.now() - timedelta(minutes=1)
        )
    elif case == "suspended":
        tenant_suspend(tenant=tenant, actor=None)
    browser, client = portal_session("ann@example.com")
    answer = paste(browser, secret)
    assert answer.status_code == 400
    assert NOT_BINDABLE in answer.content
    assert not PortalBinding.objects.filter(client=client).exists()
    # The pasted secret is not written back into the page.
    assert secret.encode() not in answer.content


def test_binding_is_throttled_per_client(
    make_reseller: Reseller, books_balance: None, settings: Settings
) -> None:
    settings.PORTAL_BINDS_PER_HOUR = 2
    tenant, _ = make_reseller(balance="200")
    issued = prepaid_key(tenant)
    browser, client = portal_session("ann@example.com")
    for n in range(2):
        assert paste(browser, f"tg-{'Z' * 40}{n}").status_code == 400
    # The third attempt within the hour is refused even with the right key.
    answer = paste(browser, issued.secret)
    assert answer.status_code == 429
    assert b"Too many attempts to add a key" in answer.content
    assert issued.secret.encode() not in answer.content
    assert not PortalBinding.objects.filter(client=client).exists()


def test_binding_is_throttled_per_network(
    make_reseller: Reseller, books_balance: None, settings: Settings
) -> None:
    settings.PORTAL_BINDS_PER_HOUR = 2
    tenant, _ = make_reseller(balance="200")
    issued = prepaid_key(tenant)
    clients = [portal_session(f"user{n}@example.com")[1] for n in range(3)]
    for client in clients[:2]:
        with pytest.raises(KeyNotBindable):
            key_bind(client=client, secret="tg-" + "Q" * 43, ip="192.0.2.9")
    with pytest.raises(BindThrottled):
        key_bind(client=clients[2], secret=issued.secret, ip="192.0.2.9")
    # The same client from another network is within its own count.
    assert key_bind(client=clients[2], secret=issued.secret, ip="198.51.100.1").key == issued.key


def test_binding_a_bound_key_again_changes_nothing(
    make_reseller: Reseller, books_balance: None
) -> None:
    tenant, _ = make_reseller(balance="200")
    issued = prepaid_key(tenant)
    browser, client = portal_session("ann@example.com")
    assert paste(browser, issued.secret).status_code == 302
    first = PortalBinding.objects.get(client=client)
    assert paste(browser, issued.secret).status_code == 302
    assert list(PortalBinding.objects.filter(client=client)) == [first]
    assert key_bind(client=client, secret=issued.secret, ip="192.0.2.1") == first


def test_two_addresses_bind_one_key_and_see_the_same_balance(
    make_reseller: Reseller, books_balance: None
) -> None:
    tenant, _ = make_reseller(balance="200")
    issued = prepaid_key(tenant)
    ClientKey.objects.filter(pk=issued.key.pk).update(client_spent_nanos=parse_usd("34.20"))
    pages = []
    for email in ("ann@example.com", "bob@example.com"):
        browser, _ = portal_session(email)
        assert paste(browser, issued.secret).status_code == 302
        pages.append(browser.get("/portal/").content.decode())
    assert PortalBinding.objects.filter(key=issued.key).count() == 2
    for page in pages:
        assert "$65.80" in page and "$34.20" in page and "$100.00" in page


def test_one_address_binds_keys_of_two_resellers(
    make_reseller: Reseller, books_balance: None
) -> None:
    acme, _ = make_reseller(email="acme@example.com", balance="200")
    Tenant.objects.filter(pk=acme.pk).update(name="Acme AI", support_email="help@acme.example")
    zeta, _ = make_reseller(email="zeta@example.com", balance="200")
    Tenant.objects.filter(pk=zeta.pk).update(name="Zeta Labs", support_email="care@zeta.example")
    first = prepaid_key(acme, label="acme-corp-prod")
    second = key_create(
        tenant=zeta,
        actor=None,
        label="zeta-research",
        client_budget_nanos=parse_usd(Decimal("50")),
        your_cost_nanos=parse_usd(Decimal("45")),
    )
    browser, client = portal_session("ann@example.com")
    for issued in (first, second):
        assert paste(browser, issued.secret).status_code == 302
    page = browser.get("/portal/").content.decode()
    assert "acme-corp-prod" in page and "zeta-research" in page
    assert "Acme AI" in page and 'href="mailto:help@acme.example"' in page
    assert "Zeta Labs" in page and 'href="mailto:care@zeta.example"' in page
    # Client prices only: the budgets, never what the keys cost their resellers.
    assert "$100.00" in page and "$50.00" in page
    assert "$60.00" not in page and "$45.00" not in page
    for word in ("cost", "profit", "margin", "ratio"):
        assert word not in page.lower()


def test_a_reseller_s_other_keys_stay_out_of_sight(
    make_reseller: Reseller, books_balance: None
) -> None:
    tenant, _ = make_reseller(balance="300")
    issued = prepaid_key(tenant, label="given-to-ann")
    prepaid_key(tenant, label="someone-elses")
    browser, _ = portal_session("ann@example.com")
    paste(browser, issued.secret)
    page = browser.get("/portal/").content.decode()
    assert "given-to-ann" in page
    assert "someone-elses" not in page


def test_the_bind_form_needs_a_signed_in_client_and_a_post() -> None:
    answer = Client().post("/portal/keys/bind/", {"key": "tg-whatever-it-is-123"})
    assert answer.status_code == 302
    assert answer["Location"] == "/portal/?next=%2Fportal%2Fkeys%2Fbind%2F"
    browser, _ = portal_session("ann@example.com")
    assert browser.get("/portal/keys/bind/").status_code == 405
    empty = browser.post("/portal/keys/bind/", {"key": "  "})
    assert empty.status_code == 400
    assert b"Paste the API key you were given." in empty.content


def test_the_bind_form_needs_its_csrf_token(make_reseller: Reseller, books_balance: None) -> None:
    tenant, _ = make_reseller(balance="200")
    issued = prepaid_key(tenant)
    browser, client = portal_session("ann@example.com", enforce_csrf_checks=True)
    assert paste(browser, issued.secret).status_code == 403
    assert not PortalBinding.objects.exists()
    browser.get("/portal/")
    token = browser.cookies["csrftoken"].value
    answer = browser.post(
        "/portal/keys/bind/", {"key": issued.secret, "csrfmiddlewaretoken": token}
    )
    assert answer.status_code == 302
    assert PortalBinding.objects.filter(client=client).exists()


def test_a_secret_is_never_logged(
    make_reseller: Reseller, books_balance: None, caplog: pytest.LogCaptureFixture
) -> None:
    tenant, _ = make_reseller(balance="200")
    issued = prepaid_key(tenant)
    key_update(tenant=tenant, actor=None, key_id=issued.key.pk, changes={"status": "revoked"})
    browser, _ = portal_session("ann@example.com")
    with caplog.at_level(logging.DEBUG):
        paste(browser, issued.secret)
        paste(browser, issued.secret[:-1])
    assert "cannot be bound" in caplog.text
    for part in (issued.secret[:12], issued.secret[12:24], issued.secret[-12:]):
        assert part not in caplog.text


# ---------------------------------------------------------------------- the services


def test_any_reseller_s_key_is_found_by_its_secret_alone(
    make_reseller: Reseller, outsider: tuple[Tenant, IssuedToken], books_balance: None
) -> None:
    mine = prepaid_key(make_reseller(balance="200")[0])
    theirs = prepaid_key(outsider[0], label="outsider-key")
    assert key_for_any_secret(secret=mine.secret) == mine.key
    found = key_for_any_secret(secret=theirs.secret)
    assert found == theirs.key and found.tenant == outsider[0]
    for other in (theirs.secret + "x", theirs.secret[:-1], "tg-\x00" + "A" * 40, "", "sk-abc"):
        assert key_for_any_secret(secret=other) is None


def test_unbinding_removes_only_that_client_s_binding(
    make_reseller: Reseller, books_balance: None
) -> None:
    tenant, _ = make_reseller(balance="200")
    issued = prepaid_key(tenant)
    ann = PortalClient.objects.create(email="ann@example.com")
    bob = PortalClient.objects.create(email="bob@example.com")
    bound(ann, issued.key)
    bound(bob, issued.key)
    key_unbind(client=ann, key_id=issued.key.pk)
    assert not PortalBinding.objects.filter(client=ann).exists()
    assert PortalBinding.objects.filter(client=bob, key=issued.key).exists()
    with pytest.raises(Http404):
        key_unbind(client=ann, key_id=issued.key.pk)
    # And it binds again.
    assert key_bind(client=ann, secret=issued.secret, ip="192.0.2.1").key == issued.key

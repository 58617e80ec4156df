"""Who reaches a key's pages in the portal: only a signed-in client who bound it.

Any other key id (a key of the same reseller nobody bound, a key of another reseller that
another address bound, a key that does not exist) answers 404 at every URL and with every
method; unbinding needs the CSRF token and removes this address's binding only."""

from __future__ import annotations

import pytest
from django.test import Client
from django.utils import timezone
from django.utils.http import urlencode

from accounts.models import Tenant
from billing.models import ModelPrice
from keys.models import ClientKey
from keys.services import key_delete
from portal.models import PortalBinding
from tests.dashboard.traffic import served
from tests.keys.apis.conftest import prepaid_key
from tests.portal.conftest import bound, portal_session
from tests.portal.key_traffic import Traffic, acme, worked_example
from tests.usage.test_exports import body

pytestmark = pytest.mark.usefixtures("books_balance")

MONTH = f"{timezone.now():%Y-%m}"
METHODS = ("get", "post", "put", "patch", "delete", "head", "options")


def every_url(key_id: int) -> list[str]:
    """Every URL of a key's pages that this worktree serves, with the queries that change
    what a view does (CSV, a month, a page, a filter)."""
    base = f"/portal/keys/{key_id}"
    return [
        f"{base}/",
        f"{base}/unbind/",
        f"{base}/usage/",
        f"{base}/usage/?window=7d",
        f"{base}/usage/?month={MONTH}",
        f"{base}/usage/?format=csv",
        f"{base}/requests/",
        f"{base}/requests/?status=ok&model=mock-gpt",
        f"{base}/requests/?before=1-1",
        f"{base}/requests/?format=csv",
        f"{base}/statements/",
        f"{base}/statements/?month=2024-01",
        f"{base}/statements/{MONTH}/",
        f"{base}/statements/{MONTH}/?format=csv",
        f"{base}/statements/2024-13/",
    ]


@pytest.fixture
def traffic(tenant: Tenant, price: ModelPrice) -> Traffic:
    return worked_example(acme(tenant), price)


@pytest.fixture
def other_resellers_key(outsider: tuple[Tenant, object], price: ModelPrice) -> ClientKey:
    """Another reseller's key, with traffic, bound by another address."""
    theirs = prepaid_key(outsider[0], label="theirs")
    served(theirs, price, request_id="req-theirs", at=timezone.now(), input_tokens=1_000)
    _, mallory_client = portal_session("mallory-client@example.com")
    bound(mallory_client, theirs)
    return theirs


def test_a_key_the_client_has_not_bound_is_not_found_at_every_url_and_method(
    tenant, price, traffic, other_resellers_key
):
    browser, client = portal_session("ann@example.com")
    bound(client, traffic.key)
    same_reseller = prepaid_key(tenant, label="not-bound")
    served(same_reseller, price, request_id="req-unbound", at=timezone.now())
    spent = {k.pk: k.client_spent_nanos for k in ClientKey.objects.all()}
    bindings = PortalBinding.objects.count()

    for key_id in (same_reseller.pk, other_resellers_key.pk, 999_999):
        for url in every_url(key_id):
            for method in METHODS:
                response = getattr(browser, method)(url)
                assert response.status_code == 404, (method, url, response.status_code)
                assert not response.streaming, url
                assert b"req-theirs" not in response.content
                assert b"req-unbound" not in response.content
    assert {k.pk: k.client_spent_nanos for k in ClientKey.objects.all()} == spent
    assert PortalBinding.objects.count() == bindings


def test_a_bound_key_answers_its_methods_only(traffic):
    browser, client = portal_session("ann@example.com")
    bound(client, traffic.key)
    for url in every_url(traffic.key.pk):
        allowed = ("get", "post") if "/unbind/" in url else ("get",)
        for method in ("put", "patch", "delete", *(() if "/unbind/" in url else ("post",))):
            assert method not in allowed
            assert getattr(browser, method)(url).status_code == 405, (method, url)
    assert PortalBinding.objects.filter(key=traffic.key).exists()


def test_the_pages_are_for_signed_in_clients_only(traffic):
    for url in every_url(traffic.key.pk):
        response = Client().get(url)
        assert response.status_code == 302, url
        assert response["Location"] == "/portal/?" + urlencode({"next": url}), url


def test_a_client_of_another_reseller_sees_that_key_and_nothing_else_of_it(
    tenant, traffic, outsider, price
):
    """Ann binds one key of reseller B (the outsider) beside her key of A: she sees B's
    key, and none of B's other keys, their requests or B's other figures."""
    b_tenant = outsider[0]
    b_tenant.name = "Bravo Models"
    b_tenant.support_email = "desk@bravo.example"
    b_tenant.save()
    hers = prepaid_key(b_tenant, label="bravo-for-ann")
    served(hers, price, request_id="req-bravo-ann", at=timezone.now(), input_tokens=1_000)
    others = prepaid_key(b_tenant, label="bravo-secret-project")
    served(others, price, request_id="req-bravo-other", at=timezone.now(), input_tokens=7_777)
    browser, client = portal_session("ann@example.com")
    bound(client, traffic.key)
    bound(client, hers)

    texts = []
    for url in every_url(hers.pk):
        if "/unbind/" in url:
            continue
        response = browser.get(url)
        assert response.status_code in (200, 302, 404), url
        texts.append(body(response))
    seen = "\n".join(texts)
    assert "req-bravo-ann" in seen and "Bravo Models" in seen and "desk@bravo.example" in seen
    for other in ("bravo-secret-project", "req-bravo-other", others.prefix, "7,777", "7777"):
        assert other not in seen
    # nor anything of reseller A on B's key's pages
    assert "Acme Resale" not in seen and traffic.first_request_id not in seen
    for url in every_url(others.pk):
        assert browser.get(url).status_code == 404


# ------------------------------------------------------------------------------ unbinding


def test_unbinding_asks_first_and_then_removes_this_addresses_binding_only(traffic):
    ann_browser, ann = portal_session("ann@example.com")
    bound(ann, traffic.key)
    _, bob = portal_session("bob@example.com")
    bound(bob, traffic.key)
    url = f"/portal/keys/{traffic.key.pk}/unbind/"

    confirm = ann_browser.get(url)
    assert confirm.status_code == 200
    text = confirm.content.decode()
    assert "Remove this key from your list?" in text
    assert "It keeps working" in text and "add it back by pasting it" in text
    assert PortalBinding.objects.filter(client=ann).count() == 1

    response = ann_browser.post(url)
    assert response.status_code == 302
    assert response["Location"] == "/portal/"
    assert not PortalBinding.objects.filter(client=ann).exists()
    assert PortalBinding.objects.filter(client=bob, key=traffic.key).exists()
    home = ann_browser.get("/portal/")
    assert f"Removed {traffic.key.label} from your keys." in home.content.decode()
    # the key itself is untouched, and is gone from ann's pages
    assert ClientKey.objects.get(pk=traffic.key.pk).status == ClientKey.Status.ACTIVE
    assert ann_browser.get(f"/portal/keys/{traffic.key.pk}/").status_code == 404
    assert ann_browser.post(url).status_code == 404


def test_unbinding_needs_the_csrf_token(traffic):
    browser, client = portal_session("ann@example.com", enforce_csrf_checks=True)
    bound(client, traffic.key)
    url = f"/portal/keys/{traffic.key.pk}/unbind/"
    assert browser.post(url).status_code == 403
    assert PortalBinding.objects.filter(client=client).exists()
    # with the token from the confirmation page it goes through
    page = browser.get(url).content.decode()
    token = page.split('name="csrfmiddlewaretoken" value="')[1].split('"')[0]
    assert browser.post(url, {"csrfmiddlewaretoken": token}).status_code == 302
    assert not PortalBinding.objects.filter(client=client).exists()


def test_a_deleted_keys_binding_can_be_removed(traffic):
    key_delete(tenant=traffic.key.tenant, actor=None, key_id=traffic.key.pk)
    browser, client = portal_session("ann@example.com")
    bound(client, traffic.key)
    assert browser.post(f"/portal/keys/{traffic.key.pk}/unbind/").status_code == 302
    assert not PortalBinding.objects.filter(client=client).exists()

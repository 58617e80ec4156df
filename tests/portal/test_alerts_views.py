"""The alert choices' page and form, ``/portal/keys/<id>/alerts/``, and the key page's
alerts panel (``portal/keys/_alerts.html``)."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from django.template.loader import render_to_string
from django.test import Client, RequestFactory
from django.utils.http import urlencode

from accounts.models import Tenant
from accounts.services import IssuedToken
from keys.models import ClientKey
from keys.services import key_create, key_delete
from portal.figures import client_key_figures
from portal.models import PortalBinding
from portal.selectors import binding_get
from tests.keys.factories import WalletKeyFactory
from tests.portal.conftest import bound, portal_session
from tests.portal.test_alerts import acme_reseller, prepaid_key, spend

pytestmark = pytest.mark.django_db


@pytest.fixture
def acme(make_reseller: Callable[..., tuple[Tenant, IssuedToken]]) -> Tenant:
    return acme_reseller(make_reseller)


def url(key: ClientKey) -> str:
    return f"/portal/keys/{key.pk}/alerts/"


def test_the_page_shows_the_choices_and_the_form(acme):
    browser, client = portal_session("ann@example.com")
    key = prepaid_key(acme)
    bound(client, key, alert_percent=80, alert_exhausted=True)

    page = browser.get(url(key))

    assert page.status_code == 200
    html = page.content.decode()
    assert "Alerts for Client A" in html
    assert f'action="/portal/keys/{key.pk}/alerts/"' in html
    assert 'name="csrfmiddlewaretoken"' in html
    assert re.search(r'<input type="number" name="alert_percent"[^>]* value="80"', html)
    assert re.search(r'<input type="checkbox" name="alert_exhausted"[^>]* checked>', html)
    for suggested in ("50", "80", "90"):
        assert f'<option value="{suggested}">' in html
    assert "At 80 %, not sent yet" in html
    assert "ann@example.com" in html
    assert f'href="/portal/keys/{key.pk}/"' in html
    # Client prices only: the key's $60 cost is nowhere.
    assert "$100.00" in html
    assert "$60.00" not in html


@pytest.mark.usefixtures("books_balance")
def test_saving_the_form_stores_the_choices_and_goes_back_to_the_key(acme):
    browser, client = portal_session("ann@example.com")
    key = prepaid_key(acme)
    binding = bound(client, key)

    answer = browser.post(url(key), {"alert_percent": "90", "alert_exhausted": "on"})

    assert answer.status_code == 302
    assert answer["Location"] == f"/portal/keys/{key.pk}/"
    binding.refresh_from_db()
    assert (binding.alert_percent, binding.alert_exhausted) == (90, True)
    message = "Alerts saved: an email about Client A at 90 % of its budget and when it runs out."
    assert message in browser.get(url(key)).content.decode()

    # Empty and unticked: both off.
    assert browser.post(url(key), {"alert_percent": ""}).status_code == 302
    binding.refresh_from_db()
    assert (binding.alert_percent, binding.alert_exhausted) == (None, False)
    assert "Alerts for Client A are off." in browser.get(url(key)).content.decode()


@pytest.mark.usefixtures("books_balance")
def test_a_new_share_rearms_a_sent_alert(acme, price):
    browser, client = portal_session("ann@example.com")
    key = prepaid_key(acme)
    binding = bound(client, key, alert_percent=80)
    PortalBinding.objects.filter(pk=binding.pk).update(percent_alerted_at="2030-01-02T03:04Z")
    assert "At 80 %, sent on 2 Jan 2030, 03:04" in browser.get(url(key)).content.decode()

    browser.post(url(key), {"alert_percent": "80"})
    binding.refresh_from_db()
    assert binding.percent_alerted_at is not None  # the same share: still sent
    browser.post(url(key), {"alert_percent": "50"})
    binding.refresh_from_db()
    assert binding.percent_alerted_at is None


@pytest.mark.parametrize(
    ("typed", "error"),
    [
        ("0", "Choose a whole number from 1 to 100."),
        ("101", "Choose a whole number from 1 to 100."),
        ("-1", "Choose a whole number from 1 to 100."),
        ("80.5", "Enter a whole number of percent, or leave it empty."),
        ("eighty", "Enter a whole number of percent, or leave it empty."),
    ],
)
def test_a_share_outside_1_to_100_is_refused_with_the_form_again(
    acme,
    typed,
    error,
):
    browser, client = portal_session("ann@example.com")
    key = prepaid_key(acme)
    binding = bound(client, key, alert_percent=80)

    answer = browser.post(url(key), {"alert_percent": typed, "alert_exhausted": "on"})

    assert answer.status_code == 400
    html = answer.content.decode()
    assert error in html
    assert 'aria-invalid="true"' in html
    assert re.search(r'<input type="checkbox" name="alert_exhausted"[^>]* checked>', html)
    binding.refresh_from_db()
    assert (binding.alert_percent, binding.alert_exhausted) == (80, False)


def test_a_key_not_bound_by_the_client_answers_404(acme, outsider):
    browser, client = portal_session("ann@example.com")
    _, other = portal_session("bob@example.com")
    theirs = prepaid_key(acme)
    bound(other, theirs, alert_percent=80)
    unbound = WalletKeyFactory.create(tenant=outsider[0])

    for key_id in (theirs.pk, unbound.pk, 999_999):
        assert browser.get(f"/portal/keys/{key_id}/alerts/").status_code == 404
        answer = browser.post(f"/portal/keys/{key_id}/alerts/", {"alert_percent": "50"})
        assert answer.status_code == 404
    assert PortalBinding.objects.get(key=theirs).alert_percent == 80


def test_the_form_needs_its_csrf_token(acme):
    browser, client = portal_session("ann@example.com", enforce_csrf_checks=True)
    key = prepaid_key(acme)
    binding = bound(client, key)

    assert browser.post(url(key), {"alert_percent": "80"}).status_code == 403
    binding.refresh_from_db()
    assert binding.alert_percent is None

    page = browser.get(url(key))
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.content.decode())
    assert token is not None
    answer = browser.post(url(key), {"alert_percent": "80", "csrfmiddlewaretoken": token[1]})
    assert answer.status_code == 302


def test_a_visitor_not_signed_in_is_sent_to_sign_in(acme):
    key = prepaid_key(acme)
    for answer in (Client().get(url(key)), Client().post(url(key), {"alert_percent": "80"})):
        assert answer.status_code == 302
        assert answer["Location"] == "/portal/?" + urlencode({"next": url(key)})


def test_a_key_without_a_budget_or_cap_says_no_alert_can_be_sent(acme):
    browser, client = portal_session("ann@example.com")
    key = key_create(tenant=acme, actor=None, label="Open", funding=ClientKey.Funding.WALLET).key
    bound(client, key)

    html = browser.get(url(key)).content.decode()
    assert "has no budget or spend cap of its own" in html
    assert "no alert is sent while it has no cap" in html
    assert 'name="alert_percent"' in html


@pytest.mark.usefixtures("books_balance")
def test_a_deleted_key_shows_no_form_and_takes_no_new_alert(acme):
    browser, client = portal_session("ann@example.com")
    key = prepaid_key(acme)
    bound(client, key)
    key_delete(tenant=acme, actor=None, key_id=key.pk)

    html = browser.get(url(key)).content.decode()
    assert "This key is deleted: it sends no more alerts." in html
    assert 'name="alert_percent"' not in html
    answer = browser.post(url(key), {"alert_percent": "80"})
    assert answer.status_code == 400
    assert PortalBinding.objects.get(key=key).alert_percent is None


@pytest.mark.usefixtures("books_balance")
def test_the_key_page_panel_renders_from_the_key_pages_context(acme, price):
    """What the key page includes, with what it passes: binding, key and figures."""
    _, client = portal_session("ann@example.com")
    key = prepaid_key(acme)
    bound(client, key, alert_percent=80, alert_exhausted=True)
    spend(key, price, "85")
    PortalBinding.objects.filter(key=key).update(percent_alerted_at="2030-01-02T03:04Z")
    binding = binding_get(client=client, key_id=key.pk)
    (figures,) = client_key_figures(keys=[binding.key])
    request = RequestFactory().get(f"/portal/keys/{key.pk}/")
    request.portal_client = client  # type: ignore[attr-defined]

    html = render_to_string(
        "portal/keys/_alerts.html",
        {"binding": binding, "key": binding.key, "figures": figures},
        request=request,
    )

    assert 'id="alerts"' in html
    assert "At 80 %, sent on 2 Jan 2030, 03:04" in html
    assert "On, not sent yet" in html
    assert re.search(r'name="alert_percent"[^>]* value="80"', html)
    assert f'action="/portal/keys/{key.pk}/alerts/"' in html
    assert "$60.00" not in html

"""The alerts in the dashboard: the delivery log, the settings' alert section (the same
service and refusals as the API), the webhook's secret shown once, a test webhook, a key's
own shares on its page; every form CSRF-checked, every page the tenant's own."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from accounts.models import Tenant
from alerts.models import AlertDelivery, AlertSettings, KeyAlertOverride
from alerts.services import alert_settings_update, alert_test_send
from billing.crypto import decrypt
from keys.services import key_delete
from tests.dashboard.conftest import sign_in
from tests.dashboard.pages import parse
from tests.keys.factories import WalletKeyFactory

VALID = {
    "key_thresholds": "50, 90 %, 100",
    "wallet_balance_below": "$25",
    "wallet_runway_days_below": "3",
    "email": "on",
    "email_to": "",
    "webhook_url": "",
}


def csrf_client(tenant: Tenant, page: str) -> tuple[Client, str]:
    client = sign_in(tenant, enforce_csrf_checks=True)
    client.get(page)
    return client, client.cookies["csrftoken"].value


# ------------------------------------------------------------------------------- the log


def test_the_log_lists_the_tenants_deliveries_with_their_outcome(page, tenant, outsider):
    AlertSettings.objects.create(tenant=tenant, webhook_url="https://93.184.216.34/hook")
    AlertSettings.objects.create(tenant=outsider[0], webhook_url="https://93.184.216.35/hook")
    failed = alert_test_send(tenant=tenant, actor=None)
    AlertDelivery.objects.filter(pk=failed.pk).update(
        status="failed", attempts=6, http_status=500, last_error="The webhook answered HTTP 500."
    )
    alert_test_send(tenant=tenant, actor=None)
    alert_test_send(tenant=outsider[0], actor=None)

    response = page.get("/dashboard/alerts/")

    assert response.status_code == 200
    rows = parse(response.content).find_all("tbody")[0].find_all("tr")
    assert len(rows) == 2
    assert "Test alert from Tollgate" in rows[1].text
    assert "Failed" in rows[1].text and "HTTP 500" in rows[1].text
    assert "Pending" in rows[0].text
    assert "93.184.216.35" not in response.content.decode()
    only_failed = parse(page.get("/dashboard/alerts/", {"status": "failed"}).content)
    assert len(only_failed.find_all("tbody")[0].find_all("tr")) == 1
    assert page.get("/dashboard/alerts/", {"status": "nonsense"}).status_code == 200
    nav = parse(response.content).find_all("ul", cls="main-nav")[0]
    (current,) = [a for a in nav.find_all("a") if a.attrs.get("aria-current") == "page"]
    assert current.text == "Alerts"


def test_the_log_without_alerts_says_what_comes_by_default(page):
    body = page.get("/dashboard/alerts/").content.decode()

    assert "No alert yet" in body and "80 % and 100 %" in body


def test_a_visitor_is_sent_to_sign_in(db):
    for url in ("/dashboard/alerts/", "/dashboard/settings/alerts/"):
        response = Client().get(url)
        assert response.status_code in (302, 405)
    response = Client().post("/dashboard/settings/alerts/", VALID)
    assert response.status_code == 302 and "/dashboard/sign-in/" in response["Location"]
    assert not AlertSettings.objects.exists()


# -------------------------------------------------------------------------- the settings


def test_the_settings_page_shows_the_alerts_and_saves_what_the_api_reads(page, tenant, api):
    form = page.get("/dashboard/settings/").content.decode()
    assert 'id="alerts"' in form
    assert 'name="key_thresholds"' in form and 'value="80, 100"' in form
    assert "alice@example.com" in form  # where the emails go by default

    response = page.post("/dashboard/settings/alerts/", VALID, follow=True)

    assert response.redirect_chain == [("/dashboard/settings/#alerts", 302)]
    assert "Alert settings saved." in response.content.decode()
    settings = api.get("/api/v1/alerts/settings").json()
    assert settings["key_thresholds"] == [50, 90, 100]
    assert settings["wallet_balance_below"] == "25.00"
    assert settings["wallet_runway_days_below"] == 3
    assert settings["email"] is True and settings["email_to"] is None
    assert 'value="50, 90, 100"' in response.content.decode()


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("key_thresholds", "80, eighty"),
        ("key_thresholds", "80, 80"),
        ("key_thresholds", "0"),
        ("wallet_balance_below", "0"),
        ("wallet_balance_below", "lots"),
        ("wallet_runway_days_below", "400"),
        ("email_to", "not-an-email"),
        ("webhook_url", "http://127.0.0.1/hook"),
        ("webhook_url", "http://169.254.169.254/latest/meta-data/"),
    ],
)
def test_the_form_refuses_what_the_api_refuses(page, api, field, value):
    response = page.post("/dashboard/settings/alerts/", {**VALID, field: value})

    assert response.status_code == 400
    assert list(response.context["alerts_form"].errors) == [field]
    assert not AlertSettings.objects.exists()
    assert 'aria-invalid="true"' in response.content.decode()


def test_the_first_webhook_shows_its_secret_once_and_never_stored(page, tenant):
    response = page.post(
        "/dashboard/settings/alerts/", {**VALID, "webhook_url": "https://93.184.216.34/hook"}
    )

    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    secret = parse(response.content).by_id("webhook-secret").text
    row = AlertSettings.objects.get(tenant=tenant)
    assert decrypt(row.webhook_secret_encrypted) == secret
    later = page.get("/dashboard/settings/").content.decode()
    assert secret not in later and f"whsec_…{secret[-4:]}" in later

    rotated = page.post("/dashboard/settings/alerts/secret/")
    new = parse(rotated.content).by_id("webhook-secret").text
    assert new != secret and "no-store" in rotated["Cache-Control"]
    row.refresh_from_db()
    assert decrypt(row.webhook_secret_encrypted) == new


def test_a_test_webhook_is_queued_and_listed(page, tenant):
    assert page.post("/dashboard/settings/alerts/test/", follow=True).status_code == 200
    assert not AlertDelivery.objects.exists()  # no webhook yet: refused with a message

    alert_settings_update(
        tenant=tenant, actor=None, changes={"webhook_url": "https://93.184.216.34/hook"}
    )
    response = page.post("/dashboard/settings/alerts/test/", follow=True)

    assert response.redirect_chain == [("/dashboard/alerts/", 302)]
    (delivery,) = AlertDelivery.objects.filter(tenant=tenant)
    assert delivery.event.type == "alert.test"
    assert "Test alert from Tollgate" in response.content.decode()


@pytest.mark.parametrize(
    ("url", "data"),
    [
        ("/dashboard/settings/alerts/", VALID),
        ("/dashboard/settings/alerts/secret/", {}),
        ("/dashboard/settings/alerts/test/", {}),
    ],
)
def test_every_alerts_form_needs_its_csrf_token(tenant: Tenant, url: str, data: dict[str, Any]):
    client, csrf = csrf_client(tenant, "/dashboard/settings/")

    assert client.post(url, data).status_code == 403
    assert not AlertSettings.objects.exists()
    assert client.post(url, {**data, "csrfmiddlewaretoken": csrf}).status_code in (200, 302)


def test_the_settings_forms_take_post_only(page):
    for url in ("/dashboard/settings/alerts/secret/", "/dashboard/settings/alerts/test/"):
        assert page.get(url).status_code == 405
    assert not AlertSettings.objects.exists()


# --------------------------------------------------------------------------- a key's page


@pytest.mark.usefixtures("books_balance")
def test_a_keys_page_shows_its_alerts_and_saves_its_own(page, tenant, api):
    key = WalletKeyFactory.create(tenant=tenant, spend_cap_nanos=10**10)
    detail = page.get(f"/dashboard/keys/{key.pk}/").content.decode()
    panel = parse(detail).by_id("alerts")
    assert "At 80 %" in panel.text and "Armed" in panel.text
    assert "The account's default (80 %, 100 %)" in panel.text

    response = page.post(
        f"/dashboard/keys/{key.pk}/alerts/", {"mode": "own", "thresholds": "50, 95"}, follow=True
    )
    assert response.redirect_chain == [(f"/dashboard/keys/{key.pk}/#alerts", 302)]
    assert "its own, at 50, 95 %" in response.content.decode()
    assert api.get(f"/api/v1/keys/{key.pk}/alerts").json()["thresholds"] == [50, 95]

    page.post(f"/dashboard/keys/{key.pk}/alerts/", {"mode": "own", "thresholds": ""})
    assert KeyAlertOverride.objects.get(key=key).thresholds == []
    page.post(f"/dashboard/keys/{key.pk}/alerts/", {"mode": "default", "thresholds": "1"})
    assert not KeyAlertOverride.objects.exists()

    refused = page.post(f"/dashboard/keys/{key.pk}/alerts/", {"mode": "own", "thresholds": "0"})
    assert refused.status_code == 400
    assert "from 1 to 100" in refused.content.decode()
    assert not KeyAlertOverride.objects.exists()


@pytest.mark.usefixtures("books_balance")
def test_another_tenants_key_is_404_and_a_deleted_key_says_so(page, tenant, outsider):
    theirs = WalletKeyFactory.create(tenant=outsider[0])
    response = page.post(f"/dashboard/keys/{theirs.pk}/alerts/", {"mode": "own", "thresholds": "5"})
    assert response.status_code == 404
    assert not KeyAlertOverride.objects.exists()

    ours = WalletKeyFactory.create(tenant=tenant)
    key_delete(tenant=tenant, actor=None, key_id=ours.pk)
    response = page.post(
        f"/dashboard/keys/{ours.pk}/alerts/", {"mode": "own", "thresholds": "5"}, follow=True
    )
    assert "This key is deleted" in response.content.decode()
    assert not KeyAlertOverride.objects.exists()
    assert page.get(f"/dashboard/keys/{ours.pk}/alerts/").status_code == 405


@pytest.mark.usefixtures("books_balance")
def test_a_keys_alerts_form_needs_its_csrf_token(tenant):
    key = WalletKeyFactory.create(tenant=tenant)
    client, csrf = csrf_client(tenant, f"/dashboard/keys/{key.pk}/")
    data = {"mode": "own", "thresholds": "50"}

    assert client.post(f"/dashboard/keys/{key.pk}/alerts/", data).status_code == 403
    assert not KeyAlertOverride.objects.exists()
    accepted = client.post(
        f"/dashboard/keys/{key.pk}/alerts/", {**data, "csrfmiddlewaretoken": csrf}
    )
    assert accepted.status_code == 302

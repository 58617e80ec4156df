"""The alerts' REST API: settings (read, change, refuse), the webhook secret shown once, a
key's own shares, the delivery log; always against an outsider who must see nothing."""

from __future__ import annotations

from typing import Any

import pytest

from alerts.models import AlertDelivery, AlertSettings
from alerts.services import alert_test_send
from billing.crypto import decrypt
from billing.money import parse_usd
from keys.services import key_delete
from tests.alerts.conftest import resolving
from tests.keys.factories import WalletKeyFactory

SETTINGS = "/api/v1/alerts/settings"
SECRET = "/api/v1/alerts/webhook-secret"
DELIVERIES = "/api/v1/alerts/deliveries"

pytestmark = pytest.mark.usefixtures("api_throttle_reset")

DEFAULTS = {
    "key_thresholds": [80, 100],
    "wallet_balance_below": None,
    "wallet_runway_days_below": None,
    "email": True,
    "email_to": None,
    "email_recipient": "alice@example.com",
    "webhook_url": None,
    "webhook_secret_hint": None,
    "webhook_secret": None,
}


def patch(api: Any, url: str, body: Any) -> Any:
    return api.patch(url, body, format="json")


def test_a_new_tenant_has_the_defaults_and_no_row(api):
    response = api.get(SETTINGS)

    assert response.status_code == 200
    assert response.json() == DEFAULTS
    assert not AlertSettings.objects.exists()


def test_changes_are_saved_and_only_those_sent(api, outsider_api):
    response = patch(
        api,
        SETTINGS,
        {
            "key_thresholds": [100, 50, 90],
            "wallet_balance_below": "50",
            "wallet_runway_days_below": 3,
            "email_to": "ops@acme.example",
        },
    )

    assert response.status_code == 200
    body = response.json()
    assert body["key_thresholds"] == [50, 90, 100]
    assert (body["wallet_balance_below"], body["wallet_runway_days_below"]) == ("50.00", 3)
    assert (body["email_to"], body["email_recipient"]) == ("ops@acme.example", "ops@acme.example")
    assert patch(api, SETTINGS, {"email": False}).json() == {**body, "email": False}
    cleared = patch(api, SETTINGS, {"wallet_balance_below": None, "email_to": None}).json()
    assert (cleared["wallet_balance_below"], cleared["email_recipient"]) == (
        None,
        "alice@example.com",
    )
    assert cleared["key_thresholds"] == [50, 90, 100]
    assert outsider_api.get(SETTINGS).json() == {
        **DEFAULTS,
        "email_recipient": "mallory@example.com",
    }


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"key_thresholds": [80, 80]}, "key_thresholds"),
        ({"key_thresholds": [0]}, "key_thresholds"),
        ({"key_thresholds": [101]}, "key_thresholds"),
        ({"key_thresholds": ["80"]}, "key_thresholds"),
        ({"key_thresholds": [80.5]}, "key_thresholds"),
        ({"key_thresholds": list(range(1, 12))}, "key_thresholds"),
        ({"key_thresholds": "80"}, "key_thresholds"),
        ({"wallet_balance_below": "0"}, "wallet_balance_below"),
        ({"wallet_balance_below": 50}, "wallet_balance_below"),
        ({"wallet_balance_below": "-5"}, "wallet_balance_below"),
        ({"wallet_runway_days_below": 0}, "wallet_runway_days_below"),
        ({"wallet_runway_days_below": "3"}, "wallet_runway_days_below"),
        ({"wallet_runway_days_below": 366}, "wallet_runway_days_below"),
        ({"email": "yes"}, "email"),
        ({"email": 1}, "email"),
        ({"email_to": "not-an-email"}, "email_to"),
        ({"email_to": ""}, "email_to"),
        ({"webhook_url": ""}, "webhook_url"),
        ({"webhook_url": "http://127.0.0.1/hook"}, "webhook_url"),
        ({"webhook_url": "http://169.254.169.254/latest/meta-data/"}, "webhook_url"),
        ({"webhook_url": "https://169.254.169.254/"}, "webhook_url"),
        ({"webhook_url": "https://[::1]/"}, "webhook_url"),
        ({"webhook_url": "ftp://93.184.216.34/"}, "webhook_url"),
        ({"webhook_secret": "mine"}, "webhook_secret"),
        ({"emails": True}, "emails"),
    ],
)
def test_bad_settings_are_a_400_naming_the_field_and_change_nothing(api, body, field):
    response = patch(api, SETTINGS, body)

    assert response.status_code == 400, response.content
    assert list(response.json()) == [field]
    assert api.get(SETTINGS).json() == DEFAULTS


def test_a_name_resolving_to_a_private_address_is_a_400(api, monkeypatch, settings):
    resolving(monkeypatch, {"intranet.example": "10.1.2.3"})

    refused = patch(api, SETTINGS, {"webhook_url": "https://intranet.example/hook"})
    assert refused.status_code == 400
    assert refused.json() == {
        "webhook_url": [
            "The URL must reach a public address: intranet.example is 10.1.2.3, a private, "
            "loopback or reserved one."
        ]
    }
    unresolved = patch(api, SETTINGS, {"webhook_url": "https://nowhere.example/hook"})
    assert unresolved.json() == {"webhook_url": ["The host nowhere.example could not be resolved."]}

    settings.ALERT_WEBHOOK_ALLOW_PRIVATE = True
    for url in ("https://intranet.example/hook", "http://127.0.0.1:9/hook"):
        assert patch(api, SETTINGS, {"webhook_url": url}).status_code == 200


def test_the_first_webhook_makes_a_secret_shown_once_and_a_rotation_another(api, tenant):
    first = patch(api, SETTINGS, {"webhook_url": "https://93.184.216.34/hook"}).json()
    secret = first["webhook_secret"]
    assert secret.startswith("whsec_") and first["webhook_secret_hint"] == f"…{secret[-4:]}"
    row = AlertSettings.objects.get(tenant=tenant)
    assert secret not in row.webhook_secret_encrypted  # encrypted at rest
    assert decrypt(row.webhook_secret_encrypted) == secret

    again = patch(api, SETTINGS, {"webhook_url": "https://93.184.216.35/hook"}).json()
    assert again["webhook_secret"] is None
    assert api.get(SETTINGS).json()["webhook_secret"] is None
    assert secret not in str(api.get(SETTINGS).content)

    rotated = api.post(SECRET)
    assert rotated.status_code == 200
    new = rotated.json()["webhook_secret"]
    assert new.startswith("whsec_") and new != secret
    assert rotated.json()["webhook_secret_hint"] == f"…{new[-4:]}"
    row.refresh_from_db()
    assert decrypt(row.webhook_secret_encrypted) == new


# ------------------------------------------------------------------------------ a key's


@pytest.mark.usefixtures("books_balance")
def test_a_keys_own_shares_and_the_default(api, tenant, outsider):
    key = WalletKeyFactory.create(tenant=tenant, spend_cap_nanos=parse_usd("10"))
    url = f"/api/v1/keys/{key.pk}/alerts"

    assert api.get(url).json() == {
        "key_id": key.pk,
        "thresholds": None,
        "default_thresholds": [80, 100],
        "effective_thresholds": [80, 100],
        "states": [
            {"threshold": 80, "crossed_at": None},
            {"threshold": 100, "crossed_at": None},
        ],
    }
    own = patch(api, url, {"thresholds": [90, 50]}).json()
    assert (own["thresholds"], own["effective_thresholds"]) == ([50, 90], [50, 90])
    assert patch(api, url, {}).json() == own  # nothing sent, nothing changes
    assert patch(api, url, {"thresholds": []}).json()["effective_thresholds"] == []
    back = patch(api, url, {"thresholds": None}).json()
    assert (back["thresholds"], back["effective_thresholds"]) == (None, [80, 100])

    assert patch(api, url, {"thresholds": [0]}).status_code == 400
    assert list(patch(api, url, {"thresholds": [5, 5]}).json()) == ["thresholds"]
    assert list(patch(api, url, {"threshold": [5]}).json()) == ["threshold"]

    theirs = WalletKeyFactory.create(tenant=outsider[0])
    for response in (
        api.get(f"/api/v1/keys/{theirs.pk}/alerts"),
        patch(api, f"/api/v1/keys/{theirs.pk}/alerts", {"thresholds": [50]}),
    ):
        assert response.status_code == 404
        assert response.json()["code"] == "not_found"


@pytest.mark.usefixtures("books_balance")
def test_a_deleted_keys_alerts_cannot_change(api, tenant):
    key = WalletKeyFactory.create(tenant=tenant)
    key_delete(tenant=tenant, actor=None, key_id=key.pk)

    response = patch(api, f"/api/v1/keys/{key.pk}/alerts", {"thresholds": [50]})

    assert response.status_code == 409
    assert response.json()["code"] == "conflict"
    assert api.get(f"/api/v1/keys/{key.pk}/alerts").status_code == 200


# ------------------------------------------------------------------------ the delivery log


def test_the_delivery_log_lists_the_tenants_own_newest_first(api, outsider_api, tenant, outsider):
    for each in (tenant, outsider[0]):
        AlertSettings.objects.create(tenant=each, webhook_url="https://93.184.216.34/hook")
    first = alert_test_send(tenant=tenant, actor=None)
    second = alert_test_send(tenant=tenant, actor=None)
    alert_test_send(tenant=outsider[0], actor=None)
    AlertDelivery.objects.filter(pk=second.pk).update(
        status="failed", attempts=6, http_status=500, last_error="The webhook answered HTTP 500."
    )

    page = api.get(DELIVERIES).json()
    assert page["count"] == 2
    assert [d["id"] for d in page["results"]] == [second.pk, first.pk]
    failed = page["results"][0]
    assert failed["event_id"].startswith("evt_")
    assert (failed["type"], failed["summary"], failed["channel"]) == (
        "alert.test",
        "Test alert from Tollgate",
        "webhook",
    )
    assert (failed["status"], failed["attempts"], failed["http_status"]) == ("failed", 6, 500)
    assert failed["key_id"] is None
    only_failed = api.get(DELIVERIES, {"status": "failed"}).json()["results"]
    assert [d["id"] for d in only_failed] == [second.pk]
    assert api.get(DELIVERIES, {"channel": "email"}).json()["count"] == 0
    assert api.get(DELIVERIES, {"status": "lost"}).status_code == 400
    assert api.get(DELIVERIES, {"page": 2}).status_code == 404
    assert outsider_api.get(DELIVERIES).json()["count"] == 1


def test_the_saved_webhook_url_is_not_looked_up_again_when_other_settings_change(api, monkeypatch):
    resolving(monkeypatch, {"hooks.example.com": "93.184.216.34"})
    url = "https://hooks.example.com/in"
    assert patch(api, SETTINGS, {"webhook_url": url}).status_code == 200
    looked_up = resolving(monkeypatch, {})  # the name server is down now

    # The form sends every field back, the URL unchanged: saved (every try checks it).
    response = patch(api, SETTINGS, {"webhook_url": url, "wallet_runway_days_below": 2})
    assert response.status_code == 200
    assert looked_up == []
    # A new URL is looked up, and refused when it does not resolve.
    assert patch(api, SETTINGS, {"webhook_url": url + "/v2"}).status_code == 400
    assert looked_up == ["hooks.example.com"]

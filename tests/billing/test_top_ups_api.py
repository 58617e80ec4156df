"""The card top-up REST API (``/api/v1/wallet/top-ups``) against the fake Stripe, always with
an outsider: validation, the answer's shape, 502/503, tenant scoping."""

from __future__ import annotations

import pytest
from django.test import Client

from billing.models import TopUp
from billing.money import parse_usd
from billing.top_ups import top_up_create
from tests.billing.stripe_fake import StripeFake, deliver, event, stripe_fake, stripe_fake_server

__all__ = ["stripe_fake", "stripe_fake_server"]  # fixtures

pytestmark = pytest.mark.usefixtures("books_balance", "api_throttle_reset")

TOP_UPS = "/api/v1/wallet/top-ups"


def test_post_opens_a_top_up_and_answers_where_to_pay(
    stripe_fake: StripeFake, api, tenant, settings
):
    settings.TOP_UP_FEE_PERCENT = "3"

    response = api.post(TOP_UPS, {"amount": "100.00"}, format="json")

    assert response.status_code == 201, response.content
    body = response.json()
    top_up = TopUp.objects.get()
    session = stripe_fake.session(top_up.stripe_session_id)
    assert body == {
        "id": top_up.pk,
        "amount": "100.00",
        "fee": "3.00",
        "total": "103.00",
        "currency": "USD",
        "status": "pending",
        "checkout_url": session["url"],
        "stripe_session_id": session["id"],
        "error": "",
        "refunded": "0.00",
        "disputed": "0.00",
        "taken_back": "0.00",
        "dispute_returned": "0.00",
        "shortfall": "0.00",
        "to_earlier_shortfall": "0.00",
        "created_at": body["created_at"],
        "credited_at": None,
    }
    assert session["amount_total"] == 10300
    assert top_up.tenant == tenant and top_up.actor == tenant.owner
    # Stripe sends the payer back to this server's dashboard page of the top-up.
    (call,) = stripe_fake.creates()
    assert (
        call.params["success_url"] == f"http://localhost:8000/dashboard/wallet/top-ups/{top_up.pk}/"
    )


@pytest.mark.parametrize(
    ("payload", "errors"),
    [
        ({"amount": "4.99"}, {"amount": ["The smallest top-up is $5.00."]}),
        ({"amount": "10000.01"}, {"amount": ["The largest top-up is $10000.00."]}),
        ({"amount": "20.001"}, {"amount": ["Top up a whole number of cents, e.g. 25.50."]}),
        (
            {"amount": 20},
            {
                "amount": [
                    'Send the amount as a decimal string, e.g. "12.50", not as a JSON number.'
                ]
            },
        ),
        ({"amount": "-20"}, {"amount": ["Must not be negative."]}),
        ({}, {"amount": ["This field is required."]}),
        ({"amount": "20", "currency": "eur"}, {"currency": ["Unknown field."]}),
    ],
)
def test_post_refuses_bad_input_and_calls_nothing(stripe_fake: StripeFake, api, payload, errors):
    response = api.post(TOP_UPS, payload, format="json")

    assert response.status_code == 400
    assert response.json() == errors
    assert not TopUp.objects.exists()
    assert stripe_fake.requests == []


def test_post_without_stripe_configured_is_503_and_makes_nothing(api, settings):
    settings.STRIPE_SECRET_KEY = ""

    response = api.post(TOP_UPS, {"amount": "20"}, format="json")

    assert response.status_code == 503
    assert response.json() == {
        "detail": "Card top-ups are not configured on this server; ask the operator to credit "
        "your wallet.",
        "code": "top_ups_not_configured",
    }
    assert not TopUp.objects.exists()


def test_post_when_stripe_refuses_is_502_and_the_row_failed(stripe_fake: StripeFake, api):
    stripe_fake.fail_next(400, "invalid_request_error", "Amount must convert to at least 50 cents.")

    response = api.post(TOP_UPS, {"amount": "20"}, format="json")

    assert response.status_code == 502
    assert response.json()["code"] == "stripe_error"
    assert "at least 50 cents" in response.json()["detail"]
    listed = api.get(TOP_UPS).json()["results"]
    assert [(t["status"], t["checkout_url"]) for t in listed] == [("failed", None)]
    assert "at least 50 cents" in listed[0]["error"]


def test_list_and_detail_show_only_the_callers_top_ups(
    stripe_fake: StripeFake, api, outsider_api, tenant, outsider
):
    mine = [top_up_create(tenant=tenant, actor=None, amount_nanos=parse_usd(a)) for a in ("5", "6")]
    theirs = top_up_create(tenant=outsider[0], actor=None, amount_nanos=parse_usd("7"))

    page = api.get(TOP_UPS).json()
    assert page["count"] == 2
    assert [t["id"] for t in page["results"]] == [mine[1].pk, mine[0].pk]  # newest first
    assert api.get(f"{TOP_UPS}/{mine[0].pk}").json()["amount"] == "5.00"
    assert api.get(f"{TOP_UPS}/{theirs.pk}").status_code == 404
    assert outsider_api.get(f"{TOP_UPS}/{mine[0].pk}").status_code == 404
    assert [t["id"] for t in outsider_api.get(TOP_UPS).json()["results"]] == [theirs.pk]


def test_detail_shows_a_credited_top_up(stripe_fake: StripeFake, api, tenant):
    top_up = top_up_create(tenant=tenant, actor=None, amount_nanos=parse_usd("25"))
    deliver(
        Client(),
        event("checkout.session.completed", stripe_fake.complete(top_up.stripe_session_id)),
    )

    body = api.get(f"{TOP_UPS}/{top_up.pk}").json()

    assert (body["status"], body["amount"]) == ("credited", "25.00")
    assert body["credited_at"] is not None
    assert api.get("/api/v1/wallet").json()["balance"] == "25.00"
    kinds = [e["kind"] for e in api.get("/api/v1/wallet/ledger").json()["results"]]
    assert kinds == ["top_up"]


@pytest.mark.parametrize("method", ["get", "post"])
def test_top_ups_need_a_reseller_token(method, stripe_fake: StripeFake, tenant):
    from rest_framework.test import APIClient

    response = getattr(APIClient(), method)(TOP_UPS, {"amount": "20"}, format="json")
    assert response.status_code == 401
    assert not TopUp.objects.exists()

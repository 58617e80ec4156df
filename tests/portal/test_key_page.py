"""A bound key's page in the portal (``/portal/keys/<id>/``): what it has left in the
client's prices, under its reseller's name, its limits, last 30 days and latest requests."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from accounts.models import Tenant
from billing.models import ModelPrice
from billing.money import Usage, parse_usd
from billing.services import wallet_credit
from keys.models import ClientKey
from keys.services import key_create, key_delete, key_update
from tests.dashboard.pages import Node, parse, stats, table_rows
from tests.dashboard.traffic import served
from tests.keys.apis.conftest import prepaid_key
from tests.metering import reserve
from tests.portal.conftest import bound, portal_session
from tests.portal.key_traffic import (
    CLIENT_LEFT,
    CLIENT_SPENT,
    RESELLER_NAME,
    SUPPORT_EMAIL,
    Traffic,
    acme,
    worked_example,
)

pytestmark = pytest.mark.usefixtures("books_balance")


def url(key: ClientKey) -> str:
    return f"/portal/keys/{key.pk}/"


@pytest.fixture
def traffic(tenant: Tenant, price: ModelPrice) -> Traffic:
    return worked_example(acme(tenant), price)


def page_of(key: ClientKey, email: str = "ann@example.com") -> Node:
    browser, client = portal_session(email)
    bound(client, key)
    response = browser.get(url(key))
    assert response.status_code == 200
    return parse(response.content)


def text_of(page: Node, element_id: str) -> str:
    return page.by_id(element_id).text


def test_the_page_shows_the_client_budget_spent_and_left_never_the_cost(traffic):
    page = page_of(traffic.key)

    assert text_of(page, "key-remaining") == f"${CLIENT_LEFT}"
    assert stats(page, "key-money") == {"Budget": "$100.00", "Spent": f"${CLIENT_SPENT}"}
    assert "34 % of the budget used" in text_of(page, "key-money")
    (bar,) = page.by_id("key-money").find_all("progress")
    assert bar.attrs["value"] == "34"
    # $34.20 in 7 days: $65.80 lasts 13 whole days at that pace.
    assert text_of(page, "key-runway") == (
        "About 13 days left at the last 7 days' pace ($34.20 spent)."
    )
    whole = page.text
    for reseller_side in ("$60.00", "$20.52", "$13.68", "$39.48"):
        assert reseller_side not in whole


def test_the_page_speaks_for_the_reseller_with_its_support_address(traffic):
    page = page_of(traffic.key)
    head = page.find_all("header", cls="portal-key-head")[0]
    assert head.find_all("h1")[0].text == "acme-corp-prod"
    assert traffic.key.display_key in head.text
    assert f"Provided by {RESELLER_NAME}" in head.text
    assert f"Questions about this key: {SUPPORT_EMAIL}" in head.text
    (mailto,) = [a for a in head.find_all("a") if a.attrs["href"].startswith("mailto:")]
    assert mailto.attrs["href"] == f"mailto:{SUPPORT_EMAIL}"
    assert text_of(page, "key-status") == "Active"


def test_a_reseller_without_a_support_address_shows_none(tenant):
    tenant.name = "Quiet Reseller"
    tenant.save()
    page = page_of(prepaid_key(tenant))
    head = page.find_all("header", cls="portal-key-head")[0]
    assert "Provided by Quiet Reseller" in head.text
    assert "Questions" not in head.text
    assert not [a for a in page.find_all("a") if a.attrs.get("href", "").startswith("mailto:")]


def test_the_page_lists_the_keys_limits(tenant, price):
    acme(tenant)
    key = prepaid_key(tenant)
    key_update(
        tenant=tenant,
        actor=None,
        key_id=key.pk,
        changes={
            "rpm": 120,
            "tpm": 50_000,
            "max_concurrency": 3,
            "models": ["mock-gpt"],
            "expires_at": timezone.now() + timedelta(days=30),
        },
    )
    key.refresh_from_db()
    limits = text_of(page_of(key), "key-limits")
    assert "Requests per minute 120" in limits
    assert "Tokens per minute 50,000" in limits
    assert "Requests at once 3" in limits
    assert "Models mock-gpt" in limits
    expires = timezone.localtime(key.expires_at, tenant.zone)
    assert f"Expires {expires:%-d %b %Y, %H:%M} Asia/Kolkata" in limits


def test_a_key_without_limits_says_so(tenant):
    key = prepaid_key(acme(tenant))
    limits = text_of(page_of(key), "key-limits")
    assert "Requests per minute 60" in limits
    assert "Tokens per minute No limit" in limits
    assert "Requests at once 5" in limits
    assert "Models All" in limits
    assert "Expires Never" in limits


def test_the_page_embeds_the_last_30_days_and_the_latest_requests(traffic):
    page = page_of(traffic.key)
    assert stats(page, "key-usage") == {
        "Spent": f"${CLIENT_SPENT}",
        "Requests": "3",
        "Tokens in": "20,000,000",
        "Cached input tokens": "1,040,000",
    }
    assert "Caching saved you $0.87" in text_of(page, "key-usage")
    assert table_rows(page, "key-usage-by-model") == [
        ["mock-gpt", "3", "1,040,000", f"${CLIENT_SPENT}", "$0.87"]
    ]
    links = {a.attrs["href"] for a in page.by_id("key-usage").find_all("a")}
    assert links == {f"/portal/keys/{traffic.key.pk}/usage/"}
    assert page.has_id("key-usage-spend-by-day") and page.has_id("key-usage-spend-by-model")
    rows = table_rows(page, "key-recent-table")
    assert [row[1:] for row in rows] == [
        ["mock-gpt", "OK", "8,000,000", "0", "1,040,000", "$14.20", "1,210 ms"],
        ["mock-gpt", "Failed", "0", "0", "0", "$0.00", "120 ms"],
        ["mock-gpt", "OK", "12,000,000", "0", "0", "$20.00", "950 ms"],
    ]


def test_times_are_in_the_resellers_time_zone(traffic):
    page = page_of(traffic.key)
    (first,) = page.by_id("key-recent-table").find_all("tbody")[0].find_all("time")[:1]
    trace = traffic.key.traces.order_by("-created_at").first()
    assert trace is not None
    local = timezone.localtime(trace.created_at, traffic.key.tenant.zone)
    assert first.text == f"{local:%Y-%m-%d %H:%M:%S}"


def test_the_page_links_to_its_reports_statements_csv_and_unbinding(traffic):
    page = page_of(traffic.key)
    links = {a.attrs["href"] for a in page.find_all("a")}
    key_id = traffic.key.pk
    zone = traffic.key.tenant.zone
    this_month = timezone.now().astimezone(zone).date().replace(day=1)
    last_month = (this_month - timedelta(days=1)).replace(day=1)
    assert {
        f"/portal/keys/{key_id}/requests/",
        f"/portal/keys/{key_id}/statements/{this_month:%Y-%m}/",
        f"/portal/keys/{key_id}/statements/{last_month:%Y-%m}/",
        f"/portal/keys/{key_id}/statements/{this_month:%Y-%m}/?format=csv",
        f"/portal/keys/{key_id}/usage/?window=30d&format=csv",
        f"/portal/keys/{key_id}/requests/?format=csv",
        f"/portal/keys/{key_id}/unbind/",
        "/portal/",
    } <= links
    (picker,) = page.by_id("key-statements").find_all("form")
    assert picker.attrs["action"] == f"/portal/keys/{key_id}/statements/"
    assert picker.attrs["method"] == "get"


def test_a_key_in_flight_shows_what_is_held(tenant, price):
    key = prepaid_key(acme(tenant))
    reserve(key=key, price=price, request_id="held", worst_case=Usage(input_tokens=3_000_000))
    page = page_of(key)
    # $3 at cost, $5 at the client's price.
    assert stats(page, "key-money")["In flight"] == "$5.00"


def test_an_idle_key_has_no_runway(tenant):
    key = prepaid_key(acme(tenant))
    page = page_of(key)
    assert text_of(page, "key-runway") == "No spend in the last 7 days."
    assert "In flight" not in stats(page, "key-money")
    assert text_of(page, "key-remaining") == "$100.00"


def test_a_wallet_funded_key_shows_its_cap_and_what_it_spent_this_period(tenant, price):
    acme(tenant)
    wallet_credit(tenant=tenant, amount_nanos=parse_usd("50"), reason="test funds")
    key = key_create(
        tenant=tenant,
        actor=None,
        label="team-share",
        funding=ClientKey.Funding.WALLET,
        spend_cap_nanos=parse_usd("25"),
        budget_period=ClientKey.BudgetPeriod.MONTHLY,
    ).key
    served(key, price, request_id="w-1", at=timezone.now(), input_tokens=5_000_000)
    page = page_of(key)
    assert stats(page, "key-money") == {"Spending cap": "$25.00", "Spent this month": "$5.00"}
    assert "per month" in text_of(page, "key-money")
    assert text_of(page, "key-remaining") == "$20.00"
    assert "Left this month" in text_of(page, "key-money")
    assert "20 % of the cap used" in text_of(page, "key-money")
    assert "Cap resets On the 1st of each month, midnight UTC" in text_of(page, "key-limits")


def test_a_daily_cap_that_outlasts_its_day_says_so(tenant, price):
    acme(tenant)
    wallet_credit(tenant=tenant, amount_nanos=parse_usd("50"), reason="test funds")
    key = key_create(
        tenant=tenant,
        actor=None,
        label="daily",
        funding=ClientKey.Funding.WALLET,
        spend_cap_nanos=parse_usd("25"),
        budget_period=ClientKey.BudgetPeriod.DAILY,
    ).key
    served(key, price, request_id="d-1", at=timezone.now(), input_tokens=5_000_000)
    page = page_of(key)
    assert text_of(page, "key-remaining") == "$20.00"
    # $20 left at $5 a week is 28 days: more than the day the cap lasts
    assert text_of(page, "key-runway") == (
        "At the last 7 days' pace ($5.00 spent), the cap lasts until it starts again."
    )
    assert "Cap resets Every day at midnight UTC" in text_of(page, "key-limits")


def test_a_key_with_nothing_left_says_requests_are_refused(tenant, price):
    key = prepaid_key(acme(tenant))
    # $60 of cost at $1/MTok: the whole $100 budget
    served(key, price, request_id="all", at=timezone.now(), input_tokens=60_000_000)
    page = page_of(ClientKey.objects.get(pk=key.pk))
    assert text_of(page, "key-remaining") == "$0.00"
    assert text_of(page, "key-runway") == (
        f"Nothing left: requests are refused until {RESELLER_NAME} tops the key up."
    )
    (bar,) = page.by_id("key-money").find_all("progress")
    assert bar.attrs["value"] == "100" and "bar-bad" in bar.classes


def test_a_wallet_funded_key_without_a_cap_says_no_cap(tenant, price):
    acme(tenant)
    wallet_credit(tenant=tenant, amount_nanos=parse_usd("50"), reason="test funds")
    key = key_create(tenant=tenant, actor=None, label="open", funding=ClientKey.Funding.WALLET).key
    served(key, price, request_id="o-1", at=timezone.now(), input_tokens=2_000_000)
    page = page_of(key)
    assert text_of(page, "key-remaining") == "No cap"
    assert stats(page, "key-money") == {"Spending cap": "None", "Spent": "$2.00"}
    assert not page.by_id("key-money").find_all("progress")
    # the reseller's wallet never shows
    assert "$50" not in page.text and "$48" not in page.text


def test_a_revoked_key_is_still_readable_and_says_it_is_off(traffic):
    key = traffic.key
    key_update(tenant=key.tenant, actor=None, key_id=key.pk, changes={"status": "revoked"})
    page = page_of(key)
    assert text_of(page, "key-status") == "Revoked"
    assert "every request made with it is refused" in page.text
    assert f"Ask {RESELLER_NAME} at {SUPPORT_EMAIL}" in page.text
    assert text_of(page, "key-remaining") == f"${CLIENT_LEFT}"
    assert not page.has_id("key-runway")  # a pace means nothing for a key that is off


def test_a_deleted_key_is_still_readable_with_its_history(traffic):
    key = traffic.key
    key_delete(tenant=key.tenant, actor=None, key_id=key.pk)
    page = page_of(key)
    assert text_of(page, "key-status") == "Deleted"
    assert f"{RESELLER_NAME} deleted this key" in page.text
    assert stats(page, "key-usage")["Spent"] == f"${CLIENT_SPENT}"
    assert len(table_rows(page, "key-recent-table")) == 3


def test_an_expired_key_says_when_it_expired(tenant):
    key = prepaid_key(acme(tenant))
    ClientKey.objects.filter(pk=key.pk).update(expires_at=timezone.now() - timedelta(days=1))
    page = page_of(ClientKey.objects.get(pk=key.pk))
    assert text_of(page, "key-status") == "Expired"
    assert "This key expired on" in page.text


def test_the_alert_choices_partial_is_on_the_page(traffic, settings):
    browser, client = portal_session("ann@example.com")
    binding = bound(client, traffic.key)
    response = browser.get(url(traffic.key))
    names = [t.name for t in response.templates]
    assert "portal/keys/_alerts.html" in names
    assert response.context["binding"] == binding
    assert response.context["key"] == traffic.key
    assert response.context["figures"].remaining_nanos == parse_usd(CLIENT_LEFT)

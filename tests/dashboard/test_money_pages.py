"""The overview, wallet and earnings pages through the Django client: every figure is the
REST API's for the same tenant (both are asked and compared), another tenant's money never
shows, and the number of queries a page makes does not grow with the number of keys.

The business behind them is the worked example (PRODUCT.md section 3) in Kolkata time, a
wallet-funded key near its monthly cap with a request in flight, and another tenant."""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from html import unescape
from typing import Any

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from accounts.models import Tenant
from accounts.services import tenant_update
from billing.models import LedgerEntry
from billing.money import Usage, format_usd, parse_usd
from billing.services import wallet_credit
from keys.models import ClientKey
from keys.services import key_create
from pages.templatetags.money import usd
from tests.dashboard.conftest import sign_in
from tests.keys.apis.conftest import prepaid_key
from tests.keys.factories import WalletKeyFactory
from tests.metering import charge, reserve
from tests.usage.conftest import trace
from tests.usage.test_exports import body

pytestmark = pytest.mark.usefixtures("books_balance", "api_throttle_reset")


def spend(
    key: ClientKey, price: Any, request_id: str, input_tokens: int, at: datetime | None = None
) -> None:
    """One request as the proxy serves it: the key's counters move (reserve and settle) and
    its trace is written with the same money."""
    settlement = charge(
        key=key, price=price, request_id=request_id, usage=Usage(input_tokens=input_tokens)
    )
    trace(
        key,
        at,
        request_id=request_id,
        input_tokens=input_tokens,
        cost_nanos=settlement.charged_cost_nanos,
        client_nanos=settlement.charged_client_nanos,
    )


@dataclass
class Business:
    tenant: Tenant
    acme: ClientKey
    team: ClientKey


@pytest.fixture
def business(tenant: Tenant, outsider: Any, price: Any) -> Business:
    tenant_update(tenant=tenant, actor=None, timezone="Asia/Kolkata")
    acme = prepaid_key(tenant)  # wallet $200 → $140; $60 set aside
    spend(acme, price, "acme-1", 12_000_000)  # $12 of cost, $20 at client prices
    spend(acme, price, "acme-2", 8_520_000)  # $34.20 spent in all, $13.68 profit
    team = key_create(
        tenant=tenant,
        actor=None,
        label="team-a",
        funding=ClientKey.Funding.WALLET,
        spend_cap_nanos=parse_usd("10"),
        budget_period=ClientKey.BudgetPeriod.MONTHLY,
    ).key
    spend(team, price, "team-1", 9_000_000)  # $9 of a $10 monthly cap: 90 %
    reserve(key=team, price=price, request_id="team-2", worst_case=Usage(input_tokens=500_000))
    theirs = prepaid_key(outsider[0], label="their-key")
    spend(theirs, price, "theirs-1", 30_000_000)
    tenant.refresh_from_db()
    return Business(tenant=tenant, acme=acme, team=team)


def text(response: Any) -> str:
    """The page's text, tags and runs of spaces dropped."""
    html = response.content.decode()
    html = re.sub(r"<script.*?</script>", " ", html, flags=re.S)
    return re.sub(r"\s+", " ", unescape(re.sub(r"<[^>]+>", " ", html)))


# ------------------------------------------------------------------------------ overview


def test_the_overview_shows_the_apis_figures(business: Business, api: Any) -> None:
    tenant = business.tenant
    page = sign_in(tenant)
    response = page.get("/dashboard/")
    assert response.status_code == 200
    shown = text(response)
    context = response.context

    wallet = api.get("/api/v1/wallet").json()
    assert wallet == {
        "balance": "131.00",  # $200 − $60 funding − $9 of usage
        "reserved": "0.50",
        "available": "130.50",
        "currency": "USD",
    }
    wallet_page = context["wallet"]
    assert [format_usd(wallet_page.balance_nanos), format_usd(wallet_page.reserved_nanos)] == [
        wallet["balance"],
        wallet["reserved"],
    ]
    for figure in ("$131.00", "$0.50", "$130.50"):
        assert figure in shown

    # Set aside: the API's keys, funded less spent less refunded, deleted ones included.
    keys = [*api.get("/api/v1/keys").json()["results"]]
    keys += api.get("/api/v1/keys", {"status": "deleted"}).json()["results"]
    set_aside = sum(
        parse_usd(k["cost_funded"]) - parse_usd(k["cost_spent"]) - parse_usd(k["cost_refunded"])
        for k in keys
        if k["funding"] == "prepaid"
    )
    assert context["set_aside_nanos"] == set_aside == parse_usd("39.48")
    assert "Set aside in prepaid keys $39.48" in shown

    # Profit this month (Kolkata's) and all time: GET /api/v1/earnings from the 1st.
    today = timezone.now().astimezone(tenant.zone).date()
    month = api.get("/api/v1/earnings", {"since": f"{today:%Y-%m}-01"}).json()
    assert format_usd(context["month"].window.profit_nanos) == month["profit"] == "13.68"
    assert format_usd(context["month"].all_time_profit_nanos) == month["all_time"]["profit"]
    assert "This month $13.68" in shown
    assert "All time $13.68" in shown

    # The last 30 days: GET /api/v1/usage's by_day from the first of them.
    first = today - timedelta(days=29)
    usage = api.get("/api/v1/usage", {"since": first.isoformat()}).json()
    days = context["days"]
    assert [d.date for d in days] == [first + timedelta(days=n) for n in range(30)]
    assert [
        (d.date.isoformat(), d.requests, format_usd(d.client_nanos), format_usd(d.cost_nanos))
        for d in days
        if d.requests
    ] == [(d["date"], d["requests"], d["client_price"], d["cost"]) for d in usage["by_day"]]
    assert context["chart"]["labels"][-1] == f"{today:%b} {today.day}"
    assert context["chart"]["datasets"][0]["data"][-1] == "43.20"  # 34.20 + 9 of client spend

    # The wallet-funded key is at 90 % of its monthly cap; the prepaid one at 34 %.
    near = context["near_limit"].keys
    assert [(k.figures.key.pk, k.used_percent) for k in near] == [(business.team.pk, 90)]
    assert f'href="/dashboard/keys/{business.team.pk}/"' in response.content.decode()
    assert "$9.00 of the $10.00 spend cap (resets every utc month)" in shown

    # Runway: $130.50 available; $69 drawn in 7 days ($60 funding, $9 usage): 13 days.
    assert context["runway"].days == 13
    assert "Runway 13 days" in shown

    # Nothing of the other tenant's.
    assert "their-key" not in shown


def test_a_new_reseller_is_told_to_create_a_first_key(make_reseller: Any) -> None:
    tenant, _ = make_reseller(balance="50")
    response = sign_in(tenant).get("/dashboard/")
    html = response.content.decode()

    assert "Create your first key" in text(response)
    assert html.count('href="/dashboard/keys/new/"') == 1
    assert re.search(r'<a href="/dashboard/keys/new/"[^>]*>New key</a>', html)
    assert "Runway — Nothing drawn in the last 7 days" in text(response)
    assert "No key has used 80 % of its budget or spend cap." in text(response)


def test_with_keys_the_overview_has_one_new_key_link_and_no_empty_state(business: Business):
    response = sign_in(business.tenant).get("/dashboard/")
    html = response.content.decode()

    assert "Create your first key" not in html
    assert html.count('href="/dashboard/keys/new/"') == 1


def queries(client: Client, url: str) -> int:
    with CaptureQueriesContext(connection) as captured:
        response = client.get(url)
    assert response.status_code == 200, url
    return len(captured)


def add_keys(tenant: Tenant, price: Any, count: int, start: int) -> None:
    """Wallet-funded keys, each with a request today, a ledger entry and a near-full cap."""
    for n in range(start, start + count):
        key = WalletKeyFactory.create(tenant=tenant, spend_cap_nanos=parse_usd("1"))
        spend(key, price, f"load-{n}", 900_000)


@pytest.mark.parametrize("url", ["/dashboard/", "/dashboard/wallet/", "/dashboard/earnings/"])
def test_the_queries_of_a_page_do_not_grow_with_the_keys(
    tenant: Tenant, outsider: Any, price: Any, url: str
) -> None:
    wallet_credit(tenant=tenant, amount_nanos=parse_usd("100"), reason="funds")
    page = sign_in(tenant)
    add_keys(tenant, price, 3, 0)
    with_three = queries(page, url)
    add_keys(tenant, price, 27, 3)
    with_thirty = queries(page, url)

    assert with_thirty == with_three, (with_three, with_thirty)
    assert with_three <= 30


# -------------------------------------------------------------------------------- wallet


def ledger_api(api: Any, **params: Any) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = []
    params = {"page_size": 200, **params}
    page = 1
    while True:
        answer = api.get("/api/v1/wallet/ledger", {**params, "page": page}).json()
        results += answer["results"]
        if not answer["next"]:
            return results
        page += 1


def test_the_wallet_page_lists_the_apis_ledger_50_a_page(
    business: Business, api: Any, price: Any
) -> None:
    for n in range(55):
        spend(business.team, price, f"small-{n}", 1_000 + n)  # $0.000001… each
    page = sign_in(business.tenant)
    entries = ledger_api(api)
    assert len(entries) == 58  # the credit, the funding, 56 requests: this tenant's only

    first = page.get("/dashboard/wallet/")
    last_shown = first.context["entries"][-1].pk
    assert first.context["older_url"] == f"?before={last_shown}"
    assert first.context["newer_url"] is None
    second = page.get("/dashboard/wallet/", {"before": last_shown})
    back = page.get("/dashboard/wallet/", {"after": second.context["entries"][0].pk})

    shown = [e.pk for e in first.context["entries"]] + [e.pk for e in second.context["entries"]]
    assert shown == [e["id"] for e in entries]
    assert len(first.context["entries"]) == 50
    assert second.context["older_url"] is None
    assert second.context["newer_url"] == f"?after={second.context['entries'][0].pk}"
    assert [e.pk for e in back.context["entries"]] == [e.pk for e in first.context["entries"]]
    assert back.context["newer_url"] is None
    assert 'href="/dashboard/wallet/?"' in second.content.decode()  # back to the newest
    row = first.context["entries"][0]
    assert (format_usd(row.amount_nanos), format_usd(row.balance_after_nanos)) == (
        entries[0]["amount"],
        entries[0]["balance_after"],
    )
    # Tiny amounts are shown to the nano-dollar, as the API has them.
    assert "−$" + entries[0]["amount"].lstrip("-") in text(first)


def test_ledger_pages_keep_the_filters_and_ignore_a_bad_cursor(
    business: Business, price: Any
) -> None:
    for n in range(52):
        spend(business.team, price, f"small-{n}", 1_000 + n)
    page = sign_in(business.tenant)

    usage = page.get("/dashboard/wallet/", {"kind": "usage"})
    older = usage.context["older_url"]
    assert older.startswith("?kind=usage&before=")
    rest = page.get(f"/dashboard/wallet/{older}")
    assert [e.kind for e in rest.context["entries"]] == ["usage"] * 3  # 53 usage entries
    assert "format=csv" in usage.context["csv_url"] and "before" not in usage.context["csv_url"]
    for bad in ("x", "-1", "9" * 30):
        assert page.get("/dashboard/wallet/", {"before": bad}).status_code == 200


def test_the_ledger_filters_by_kind_and_local_days(business: Business, api: Any) -> None:
    tenant = business.tenant
    page = sign_in(tenant)
    funding = page.get("/dashboard/wallet/", {"kind": "key_funding"})
    assert [e.pk for e in funding.context["entries"]] == [
        e["id"] for e in ledger_api(api, kind="key_funding")
    ]
    assert "Funding of key acme-corp-prod" in text(funding)

    # The credit moved to yesterday 23:00 in Kolkata: shown for yesterday only.
    today = timezone.now().astimezone(tenant.zone).date()
    yesterday = today - timedelta(days=1)
    credit = LedgerEntry.objects.get(wallet__tenant=tenant, kind=LedgerEntry.Kind.MANUAL_CREDIT)
    late = datetime(yesterday.year, yesterday.month, yesterday.day, 23, tzinfo=tenant.zone)
    LedgerEntry.objects.filter(pk=credit.pk).update(created_at=late)
    day = {"since": yesterday.isoformat(), "until": yesterday.isoformat()}
    assert [e.pk for e in page.get("/dashboard/wallet/", day).context["entries"]] == [credit.pk]
    today_only = page.get("/dashboard/wallet/", {"since": today.isoformat()})
    assert credit.pk not in [e.pk for e in today_only.context["entries"]]

    bad = page.get(
        "/dashboard/wallet/", {"since": today.isoformat(), "until": yesterday.isoformat()}
    )
    assert bad.status_code == 200
    assert "Must be on or after the first day." in text(bad)


def test_the_ledger_csv_has_every_entry_as_the_api_does(
    business: Business, api: Any, price: Any
) -> None:
    for n in range(60):
        spend(business.team, price, f"small-{n}", 1_000 + n)
    page = sign_in(business.tenant)

    response = page.get("/dashboard/wallet/", {"format": "csv"})
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert response["Content-Disposition"].startswith('attachment; filename="ledger-')
    rows = list(csv.DictReader(io.StringIO(body(response), newline="")))
    entries = ledger_api(api)

    assert [
        (int(r["id"]), r["kind"], r["amount"], r["balance_after"], r["reason"]) for r in rows
    ] == [(e["id"], e["kind"], e["amount"], e["balance_after"], e["reason"]) for e in entries]
    assert {r["key_label"] for r in rows if r["kind"] == "usage"} == {"team-a"}
    assert rows[0]["created_at"] == entries[0]["created_at"]

    funding = list(
        csv.DictReader(
            io.StringIO(body(page.get("/dashboard/wallet/?kind=key_funding&format=csv")))
        )
    )
    assert [r["kind"] for r in funding] == ["key_funding"]


def test_the_balance_chart_ends_at_the_balance_now(business: Business, api: Any) -> None:
    page = sign_in(business.tenant)
    response = page.get("/dashboard/wallet/")
    balances = response.context["balances"]

    assert len(balances) == 90
    assert format_usd(balances[-1].balance_nanos) == api.get("/api/v1/wallet").json()["balance"]
    assert balances[0].balance_nanos == 0  # before the first credit
    chart = response.context["balance_chart"]
    assert chart["datasets"][0]["data"][-1] == "131.00"


def test_an_htmx_request_gets_the_results_alone(business: Business) -> None:
    page = sign_in(business.tenant)
    fragment = page.get("/dashboard/wallet/", {"kind": "usage"}, headers={"HX-Request": "true"})
    whole = page.get(
        "/dashboard/wallet/",
        headers={"HX-Request": "true", "HX-History-Restore-Request": "true"},
    )

    html = fragment.content.decode()
    assert html.lstrip().startswith('<div id="results">')
    assert "<html" not in html and "API usage" in html
    assert "HX-Request" in fragment["Vary"]
    assert "<html" in whole.content.decode()


# ------------------------------------------------------------------------------ earnings


def months_ago(first: date, count: int) -> date:
    index = first.year * 12 + first.month - 1 - count
    return date(index // 12, index % 12 + 1, 1)


def test_earnings_show_the_apis_figures_for_the_last_twelve_months(
    business: Business, api: Any, price: Any
) -> None:
    tenant = business.tenant
    this_month = timezone.now().astimezone(tenant.zone).date().replace(day=1)
    # A request five months ago (its trace; the counters are all time anyway).
    old = months_ago(this_month, 5)
    spend(business.acme, price, "old-1", 1_000_000, at=timezone.now() - timedelta(days=5 * 31))
    page = sign_in(tenant)

    response = page.get("/dashboard/earnings/")
    start = months_ago(this_month, 11)
    earnings = api.get("/api/v1/earnings", {"since": start.isoformat()}).json()
    report = response.context["report"]

    assert (response.context["start"], response.context["end"]) == (start, this_month)
    assert [
        format_usd(report.window.client_nanos),
        format_usd(report.window.cost_nanos),
        format_usd(report.window.profit_nanos),
        str(report.window.margin_percent),
    ] == [earnings["revenue"], earnings["cost"], earnings["profit"], earnings["margin_percent"]]
    months = response.context["months"]
    assert [m.month for m in months] == [months_ago(this_month, 11 - n) for n in range(12)]
    assert [
        (m.month.isoformat(), format_usd(m.client_nanos), format_usd(m.profit_nanos))
        for m in months
        if m.requests
    ] == [(m["month"], m["revenue"], m["profit"]) for m in earnings["by_month"]]
    assert any(m.month <= old and m.requests for m in months)
    assert [(k.figures.key.pk, format_usd(k.profit_nanos)) for k in response.context["keys"]] == [
        (k["id"], k["profit"]) for k in earnings["by_key"] if k["requests"]
    ]
    shown = text(response)
    assert f"Total {earnings['requests']} {usd(report.window.client_nanos)}" in shown
    assert "their-key" not in shown


def test_earnings_csv_is_the_apis_csv_for_the_range(business: Business, api: Any) -> None:
    tenant = business.tenant
    this_month = timezone.now().astimezone(tenant.zone).date().replace(day=1)
    start = months_ago(this_month, 2)
    page = sign_in(tenant)
    asked = {"start": f"{start:%Y-%m}", "end": f"{this_month:%Y-%m}"}

    by_key = page.get("/dashboard/earnings/", {**asked, "format": "csv"})
    api_csv = api.get("/api/v1/earnings", {"since": start.isoformat(), "format": "csv"})
    by_month = page.get("/dashboard/earnings/", {**asked, "format": "csv", "table": "months"})

    assert by_key.content == api_csv.content
    assert "earnings-by-key-" in by_key["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(by_month.content.decode())))
    assert [r["month"] for r in rows] == [
        months_ago(this_month, 2 - n).isoformat() for n in range(3)
    ]
    assert rows[-1]["profit"] == "13.68"  # the worked example's, this month
    assert (
        rows[-1]["margin_percent"]
        == api.get("/api/v1/earnings", {"since": this_month.isoformat()}).json()["margin_percent"]
    )


@pytest.mark.parametrize(
    ("start", "end", "message"),
    [
        ("2026-13", "2026-01", "Give a month as YYYY-MM"),
        ("1999-12", "2000-01", "Give a month as YYYY-MM, from 2000-01"),
        ("2020-05", "2020-04", "Must be the same month as From or a later one."),
        ("2000-01", "2030-01", "has not begun yet"),
    ],
)
def test_earnings_refuse_a_bad_range_and_keep_the_default(
    business: Business, start: str, end: str, message: str
) -> None:
    response = sign_in(business.tenant).get("/dashboard/earnings/", {"start": start, "end": end})

    assert response.status_code == 200
    assert message in text(response)
    assert len(response.context["months"]) == 12


def test_a_range_longer_than_ten_years_is_refused(business: Business) -> None:
    response = sign_in(business.tenant).get(
        "/dashboard/earnings/", {"start": "2000-01", "end": "2010-01"}
    )
    assert "At most 120 months (10 years) at once." in text(response)


# ----------------------------------------------------------------------------- who sees


@pytest.mark.parametrize(
    "url",
    ["/dashboard/", "/dashboard/wallet/", "/dashboard/earnings/", "/dashboard/wallet/?format=csv"],
)
def test_a_visitor_who_is_not_signed_in_reaches_no_money(db: None, url: str) -> None:
    response = Client().get(url)
    assert response.status_code == 302
    assert response["Location"].startswith("/dashboard/sign-in/?next=")


def test_earnings_list_the_top_keys_and_leave_the_rest_to_the_csv(
    business: Business, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("dashboard.money_views.EARNINGS_KEYS_SHOWN", 1)
    page = sign_in(business.tenant)

    response = page.get("/dashboard/earnings/")
    csv_rows = list(
        csv.DictReader(io.StringIO(page.get("/dashboard/earnings/?format=csv").content.decode()))
    )

    assert [k.figures.key.pk for k in response.context["keys"]] == [business.acme.pk]
    assert "1 more had traffic: the CSV lists every key." in text(response)
    assert {int(r["key_id"]) for r in csv_rows} == {business.acme.pk, business.team.pk}

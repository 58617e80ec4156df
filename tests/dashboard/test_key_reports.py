"""A key's reports in the dashboard (usage, requests, the monthly statement): the REST API's
figures and CSV, for the signed-in tenant's keys only.

Every figure a page shows is checked against what the REST API answers for the same key at
the same moment (``/api/v1/keys/{id}/usage``, ``/earnings``, ``/requests``,
``/statements/YYYY-MM``), formatted as the page formats money (``usd``: whole cents, half
up; a request's price to the nano-dollar) and counts; the traffic is made through the
real reserve/settle path (``tests.dashboard.traffic``)."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from django.test import Client
from django.utils import timezone
from django.utils.dateformat import format as date_format

from accounts.models import Tenant
from billing.models import ModelPrice, Upstream
from billing.money import parse_usd
from billing.services import price_set
from keys.models import ClientKey
from pages.templatetags.money import usd, usd_exact
from pages.templatetags.numbers import thousands
from tests.dashboard.key_reports import api_url, page_url, signed_in
from tests.dashboard.pages import Node, parse, stat_notes, stats, table_rows
from tests.dashboard.traffic import failed, refused, served
from tests.keys.apis.conftest import prepaid_key
from tests.keys.factories import WalletKeyFactory
from tests.usage.factories import TraceFactory
from tests.usage.test_exports import body, table
from usage.models import Trace

pytestmark = pytest.mark.usefixtures("books_balance", "api_throttle_reset")

KOLKATA = ZoneInfo("Asia/Kolkata")


def money(text: str) -> str:
    """An API amount (decimal string of dollars) as the page shows a total."""
    return usd(parse_usd(text))


def money_exact(text: str) -> str:
    return usd_exact(parse_usd(text))


@pytest.fixture
def browser(tenant: Tenant) -> Client:
    return signed_in(tenant)


@pytest.fixture
def claude_price(upstream: Upstream) -> ModelPrice:
    """mock-claude at $3 input / $15 output / $0.30 cached per 1M tokens."""
    return price_set(
        model="mock-claude",
        upstream=upstream,
        input_per_mtok_nanos=parse_usd(Decimal("3")),
        output_per_mtok_nanos=parse_usd(Decimal("15")),
        cached_input_per_mtok_nanos=parse_usd(Decimal("0.3")),
    )


@pytest.fixture
def acme(tenant: Tenant) -> Tenant:
    tenant.name = "Acme Resale"
    tenant.support_email = "help@acme.example"
    tenant.timezone = "Asia/Kolkata"
    tenant.save()
    return tenant


@pytest.fixture
def busy_key(acme: Tenant, price: ModelPrice, claude_price: ModelPrice) -> ClientKey:
    """The worked example's key ($100 for $60) with two models' traffic over 40 days, a
    failure and a refusal, tagged and untagged, some of it cached."""
    key = prepaid_key(acme)
    now = timezone.now()
    hours = [2, 5, 26, 30, 50, 75, 24 * 6, 24 * 12, 24 * 20, 24 * 40]
    for n, ago in enumerate(hours):
        served(
            key,
            price if n % 3 else claude_price,
            request_id=f"req-busy-{n}",
            at=now - timedelta(hours=ago),
            input_tokens=120_000 + 7_919 * n,
            output_tokens=30_000 + 1_013 * n,
            cached_input_tokens=50_000 if n % 2 else 0,
            tag="prod" if n % 4 else "",
            latency_ms=900 + n,
            ttft_ms=200 + n,
        )
    failed(key, price, request_id="req-busy-failed", at=now - timedelta(hours=27), tag="prod")
    refused(key, request_id="req-busy-refused", at=now - timedelta(hours=3), model="mock-gpt")
    return key


def day_text(iso_date: str) -> str:
    """A report's local date (``2026-03-01``) as the page's tables write it."""
    return date_format(datetime.fromisoformat(iso_date), "D j M Y")


def usage_rows(csv_rows: list[dict[str, str]], section: str) -> list[list[str]]:
    """The API CSV's rows of one section as the usage page's table shows them."""
    shown = []
    for row in csv_rows:
        if row["section"] != section:
            continue
        name = row["model"] if section == "model" else day_text(row["date"])
        counts = ("requests", "errors", "input_tokens", "output_tokens", "cached_input_tokens")
        amounts: tuple[str, ...] = ("client_price", "cost", "profit")
        if section == "model":
            amounts += ("client_cache_savings", "cache_savings")
        shown.append(
            [name, *(thousands(int(row[c])) for c in counts), *(money(row[a]) for a in amounts)]
        )
    return shown


# --------------------------------------------------------------------------------- usage


@pytest.mark.parametrize(
    ("query", "api_query"),
    [
        ({"window": "30d"}, {"window": "30d"}),
        ({}, {}),  # 30 days by default, as the API
        ({"window": "7d"}, {"window": "7d"}),
        ({"window": "90d"}, {"window": "90d"}),
    ],
)
def test_the_usage_page_shows_the_apis_figures(browser, api, busy_key, query, api_query):
    response = browser.get(page_url(busy_key.pk, "usage"), query)
    report = api.get(api_url(busy_key.pk, "usage"), api_query).json()
    csv_rows = table(api.get(api_url(busy_key.pk, "usage"), {**api_query, "format": "csv"}))
    (earned,) = [
        k for k in api.get("/api/v1/earnings", api_query).json()["by_key"] if k["id"] == busy_key.pk
    ]

    assert response.status_code == 200
    page = parse(response.content)
    summary = report["summary"]
    assert summary["requests"] > 0
    assert stats(page, "key-usage") == {
        "Requests": thousands(summary["requests"]),
        "Client spend": money(summary["client_price"]),
        "Cost": money(summary["cost"]),
        "Profit": money(summary["profit"]),
        "Tokens in": thousands(summary["input_tokens"]),
        "Cached input tokens": thousands(summary["cached_input_tokens"]),
    }
    # What the earnings report says of this key in the same window.
    assert (earned["revenue"], earned["cost"], earned["profit"]) == (
        summary["client_price"],
        summary["cost"],
        summary["profit"],
    )
    assert stat_notes(page, "key-usage") == {
        "Requests": f"{summary['errors']} failed",
        "Profit": f"{earned['margin_percent']} % margin",
        "Tokens in": f"{thousands(summary['output_tokens'])} out",
        "Cached input tokens": f"Caching saved your client {money(summary['client_cache_savings'])}"
        f" ({money(summary['cache_savings'])} at cost)",
    }
    assert table_rows(page, "key-usage-by-model") == usage_rows(csv_rows, "model")
    assert [r[0] for r in table_rows(page, "key-usage-by-model")] == [
        m["model"] for m in report["by_model"]
    ]
    assert table_rows(page, "key-usage-by-day") == usage_rows(csv_rows, "day")
    assert [(r[0], r[1], r[6], r[7]) for r in table_rows(page, "key-usage-by-day")] == [
        (day_text(d["date"]), str(d["requests"]), money(d["client_price"]), money(d["cost"]))
        for d in report["by_day"]
    ]
    # The window as the API states it, in the tenant's zone.
    assert report["timezone"] == "Asia/Kolkata"
    assert "days in Asia/Kolkata" in page.by_id("key-usage").text


def test_the_usage_charts_draw_every_day_of_the_window(browser, busy_key):
    response = browser.get(page_url(busy_key.pk, "usage"), {"window": "7d"})
    charts = response.context["charts"]
    span = response.context["span"]

    days = charts.requests_by_day["labels"]
    assert len(days) in (7, 8)  # seven days back from now: the first and last partly
    assert days[-1] == date_format(span.until, "M j")
    requests = charts.requests_by_day["datasets"][0]["data"]
    assert sum(requests) == response.context["report"].summary.requests
    assert [s["label"] for s in charts.money_by_day["datasets"]] == [
        "Client spend",
        "Cost",
        "Profit",
    ]
    assert charts.money_by_model["labels"] == ["mock-claude", "mock-gpt"]
    page = response.content.decode()
    for chart in ("money-by-day", "requests-by-day", "tokens-by-day", "money-by-model"):
        assert f'data-chart-data="key-usage-{chart}"' in page
        # Not a <script>: htmx drops those from the fragments it swaps in.
        assert f'<div hidden id="key-usage-{chart}" class="chart-data">{{&quot;labels' in page
    assert "vendor/chart.js-4.6.1/chart.umd.min.js" in page


def test_a_month_of_usage_is_the_apis_since_until_month(browser, api, acme, price):
    key = prepaid_key(acme)
    # Local (Kolkata) March 2025: the first request is on 28 February in UTC.
    served(
        key,
        price,
        request_id="r-1",
        at=datetime(2025, 3, 1, 0, 10, tzinfo=KOLKATA),
        input_tokens=1_000_000,
    )
    served(
        key,
        price,
        request_id="r-2",
        at=datetime(2025, 3, 31, 23, 50, tzinfo=KOLKATA),
        output_tokens=500_000,
    )
    served(
        key, price, request_id="r-3", at=datetime(2025, 4, 1, 0, 0, tzinfo=KOLKATA), input_tokens=9
    )

    response = browser.get(page_url(key.pk, "usage"), {"month": "2025-03"})
    report = api.get(
        api_url(key.pk, "usage"), {"since": "2025-03-01", "until": "2025-04-01"}
    ).json()
    page = parse(response.content)

    assert report["summary"]["requests"] == 2
    assert stats(page, "key-usage")["Client spend"] == money(report["summary"]["client_price"])
    assert stats(page, "key-usage")["Client spend"] == "$3.33"  # ($1 of input + $1 of output) / 0.6
    assert [r[0] for r in table_rows(page, "key-usage-by-day")] == [
        "Sat 1 Mar 2025",
        "Mon 31 Mar 2025",
    ]
    assert len(response.context["charts"].money_by_day["labels"]) == 31
    assert "1 Mar 2025, 00:00 – 31 Mar 2025, 23:59" in page.by_id("key-usage").text
    csv = api.get(
        api_url(key.pk, "usage"), {"since": "2025-03-01", "until": "2025-04-01", "format": "csv"}
    )
    mine = browser.get(page_url(key.pk, "usage"), {"month": "2025-03", "format": "csv"})
    assert body(mine) == body(csv)
    assert mine["Content-Disposition"] == csv["Content-Disposition"]


def test_a_month_without_traffic_is_all_zeros_with_a_next_step(browser, api, acme, price):
    key = prepaid_key(acme)
    served(key, price, request_id="r-1", at=datetime(2025, 3, 5, tzinfo=KOLKATA), input_tokens=10)

    usage = parse(browser.get(page_url(key.pk, "usage"), {"month": "2025-02"}).content)
    statement = browser.get(page_url(key.pk, "statements") + "2025-02/")
    api_statement = api.get(api_url(key.pk, "statements") + "/2025-02").json()

    assert stats(usage, "key-usage")["Requests"] == "0"
    assert stats(usage, "key-usage")["Client spend"] == "$0.00"
    assert "No requests in this window." in usage.by_id("key-usage").text
    assert not usage.has_id("key-usage-by-day")
    assert api_statement["totals"]["requests"] == 0
    shown = parse(statement.content)
    assert stats(shown, "key-statement")["Amount"] == "$0.00"
    assert "No requests in February 2025." in shown.by_id("key-statement").text


def test_the_usage_csv_is_the_apis_csv(browser, api, busy_key):
    mine = browser.get(page_url(busy_key.pk, "usage"), {"window": "90d", "format": "csv"})
    theirs = api.get(api_url(busy_key.pk, "usage"), {"window": "90d", "format": "csv"})

    assert mine["Content-Type"] == theirs["Content-Type"] == "text/csv; charset=utf-8"
    assert mine["Content-Disposition"] == theirs["Content-Disposition"]
    assert body(mine) == body(theirs)
    assert len(table(mine)) > 3


def test_a_usage_query_it_cannot_read_shows_thirty_days_and_says_why(browser, busy_key):
    response = browser.get(page_url(busy_key.pk, "usage"), {"window": "1y", "month": "2999-01"})
    page = parse(response.content)

    assert response.status_code == 200
    alert = page.by_id("key-usage").find_all(cls="form-error")[0].text
    assert "Showing the last 30 days." in alert
    assert "has not begun yet" in alert
    assert response.context["span"].label == "30d"


# ------------------------------------------------------------------------------ requests


def request_row(shown: dict[str, Any]) -> list[str]:
    """A request of the API's list as the requests page's table shows it."""
    at = datetime.fromisoformat(shown["created_at"]).astimezone(KOLKATA)
    return [
        f"{at:%Y-%m-%d %H:%M:%S}",
        shown["model"],
        Trace.Status(shown["status"]).label,
        thousands(shown["input_tokens"]),
        thousands(shown["output_tokens"]),
        thousands(shown["cached_input_tokens"]),
        money_exact(shown["client_price"]),
        money_exact(shown["cost"]),
        f"{thousands(shown['latency_ms'])} ms",
        "—" if shown["ttft_ms"] is None else f"{thousands(shown['ttft_ms'])} ms",
        shown["tag"] or "—",
    ]


def local_input(at: datetime) -> str:
    """A time as a ``datetime-local`` input sends it, in the tenant's zone."""
    return f"{at.astimezone(KOLKATA):%Y-%m-%dT%H:%M}"


@pytest.mark.parametrize(
    ("query", "api_query"),
    [
        ({}, {}),
        ({"model": "mock-claude"}, {"model": "mock-claude"}),
        ({"status": "upstream_error"}, {"status": "upstream_error"}),
        ({"status": "refused", "model": "mock-gpt"}, {"status": "refused", "model": "mock-gpt"}),
        ({"tag": "prod"}, {"tag": "prod"}),
        ({"untagged": "1"}, {"tag": ""}),
        ({"model": "", "status": "", "tag": "", "since": "", "until": ""}, {}),  # an empty form
        ({"model": "no-such-model"}, {"model": "no-such-model"}),
    ],
)
def test_the_requests_page_lists_the_apis_requests(browser, api, busy_key, query, api_query):
    response = browser.get(page_url(busy_key.pk, "requests"), query)
    listed = api.get(api_url(busy_key.pk, "requests"), api_query).json()["results"]

    assert response.status_code == 200
    page = parse(response.content)
    if listed:
        assert table_rows(page, "key-requests-table") == [request_row(r) for r in listed]
    else:
        assert not page.has_id("key-requests-table")
        assert "No requests match these filters." in page.by_id("key-requests").text


def test_the_requests_time_range_is_read_in_the_tenants_zone(browser, api, busy_key):
    now = timezone.now().replace(second=0, microsecond=0)
    since, until = now - timedelta(hours=28), now - timedelta(hours=4)

    response = browser.get(
        page_url(busy_key.pk, "requests"),
        {"since": local_input(since), "until": local_input(until)},
    )
    listed = api.get(
        api_url(busy_key.pk, "requests"), {"since": since.isoformat(), "until": until.isoformat()}
    ).json()["results"]

    assert [r["request_id"] for r in listed] == ["req-busy-1", "req-busy-2", "req-busy-failed"]
    assert table_rows(parse(response.content), "key-requests-table") == [
        request_row(r) for r in listed
    ]


def test_requests_come_in_pages_of_fifty_newest_first(browser, api, acme):
    key = WalletKeyFactory.create(tenant=acme)
    now = timezone.now()
    for n in range(120):  # volume, not money: rows as the proxy batches them
        TraceFactory.create(
            client_key=key, request_id=f"req-{n:03d}", created_at=now - timedelta(minutes=n)
        )

    def page(number: int) -> tuple[Node, list[str]]:
        shown = parse(browser.get(page_url(key.pk, "requests"), {"page": number}).content)
        listed = api.get(api_url(key.pk, "requests"), {"page": number, "page_size": 50}).json()
        return shown, [request_row(r)[0] for r in listed["results"]]

    first, api_first = page(1)
    second, _ = page(2)
    third, api_third = page(3)

    assert [r[0] for r in table_rows(first, "key-requests-table")] == api_first
    assert len(api_first) == 50
    assert [r[0] for r in table_rows(third, "key-requests-table")] == api_third
    assert len(api_third) == 20
    pager = first.find_all("nav", cls="pager")[0]
    assert [a.attrs["href"] for a in pager.find_all("a")] == [
        f"/dashboard/keys/{key.pk}/requests/?page=2"
    ]
    pager = second.find_all("nav", cls="pager")[0]
    assert [(a.text, a.attrs["href"]) for a in pager.find_all("a")] == [
        ("← Newer", f"/dashboard/keys/{key.pk}/requests/"),  # the first page: no query at all
        ("Older →", f"/dashboard/keys/{key.pk}/requests/?page=3"),
    ]
    pager = third.find_all("nav", cls="pager")[0]
    assert [a.text for a in pager.find_all("a")] == ["← Newer"]
    past = parse(browser.get(page_url(key.pk, "requests"), {"page": 4}).content)
    assert "No more requests." in past.by_id("key-requests").text


def test_paging_keeps_the_filters(browser, acme):
    key = WalletKeyFactory.create(tenant=acme)
    for _ in range(60):
        TraceFactory.create(client_key=key, model="mock-claude", tag="prod")

    shown = parse(browser.get(page_url(key.pk, "requests"), {"tag": "prod", "page": "1"}).content)

    (older,) = shown.find_all("nav", cls="pager")[0].find_all("a")
    assert older.attrs["href"] == f"/dashboard/keys/{key.pk}/requests/?tag=prod&page=2"
    (csv_link,) = [a for a in shown.find_all("a") if "download" in a.attrs]
    assert csv_link.attrs["href"] == f"/dashboard/keys/{key.pk}/requests/?tag=prod&format=csv"


@pytest.mark.parametrize(
    ("query", "api_query"),
    [
        ({}, {}),
        ({"model": "mock-gpt", "tag": "prod"}, {"model": "mock-gpt", "tag": "prod"}),
        ({"untagged": "1"}, {"tag": ""}),
        ({"status": "ok", "page": "2"}, {"status": "ok"}),  # every row, whatever the page
    ],
)
def test_the_requests_csv_is_the_apis_csv(browser, api, busy_key, query, api_query):
    mine = browser.get(page_url(busy_key.pk, "requests"), {**query, "format": "csv"})
    theirs = api.get(api_url(busy_key.pk, "requests"), {**api_query, "format": "csv"})

    assert mine.streaming
    assert mine["Content-Type"] == theirs["Content-Type"] == "text/csv; charset=utf-8"
    assert mine["Content-Disposition"].startswith(
        f'attachment; filename="key-{busy_key.pk}-requests-'
    )
    shown = body(mine)
    assert shown == body(theirs)
    assert len(shown.splitlines()) > 2


@pytest.mark.parametrize(
    ("query", "field", "message"),
    [
        ({"status": "bogus"}, "status", "Select a valid choice."),
        ({"since": "yesterday"}, "since", "Give a date and time such as 2026-03-01T09:30."),
        ({"since": "2026-03-02T00:00", "until": "2026-03-01T00:00"}, "until", "Must be later"),
        ({"tag": "prod", "untagged": "1"}, "tag", "not both"),
        ({"page": "0"}, "page", "greater than or equal to 1"),
        ({"model": "m" * 201}, "model", "at most 200 characters"),
    ],
)
def test_filters_it_cannot_read_are_named_and_list_nothing(
    browser, busy_key, query, field, message
):
    response = browser.get(page_url(busy_key.pk, "requests"), query)
    csv = browser.get(page_url(busy_key.pk, "requests"), {**query, "format": "csv"})

    assert response.status_code == csv.status_code == 400
    assert message in " ".join(response.context["form"].errors[field])
    assert message.split("'")[0] in response.content.decode().replace("&#x27;", "'")
    page = parse(response.content)
    assert not page.has_id("key-requests-table")
    assert "Fix the filters above" in page.by_id("key-requests").text
    assert not csv.streaming


def test_a_key_without_requests_says_what_comes_next(browser, acme):
    key = WalletKeyFactory.create(tenant=acme)
    page = parse(browser.get(page_url(key.pk, "requests")).content)
    assert "No requests yet." in page.by_id("key-requests").text


# ---------------------------------------------------------------------------- statements


@pytest.fixture
def march_key(acme: Tenant, price: ModelPrice, claude_price: ModelPrice) -> ClientKey:
    """A key created in February 2025 (Kolkata) with traffic in and around March."""
    key = prepaid_key(acme, label="client-one")
    ClientKey.objects.filter(pk=key.pk).update(created_at=datetime(2025, 2, 10, tzinfo=KOLKATA))
    key.refresh_from_db()
    at = [
        (datetime(2025, 2, 28, 23, 59, tzinfo=KOLKATA), price),  # the month before
        (datetime(2025, 3, 1, 0, 0, tzinfo=KOLKATA), price),  # 28 Feb in UTC
        (datetime(2025, 3, 1, 0, 1, tzinfo=KOLKATA), claude_price),
        (datetime(2025, 3, 17, 12, 0, tzinfo=KOLKATA), claude_price),
        (datetime(2025, 3, 31, 23, 59, tzinfo=KOLKATA), price),
        (datetime(2025, 4, 1, 0, 0, tzinfo=KOLKATA), price),  # the month after
    ]
    for n, (moment, model_price) in enumerate(at):
        served(
            key,
            model_price,
            request_id=f"req-march-{n}",
            at=moment,
            input_tokens=1_000_000 + n,
            output_tokens=100_000 * n,
            cached_input_tokens=200_000 if n % 2 else 0,
        )
    return key


def test_the_statement_page_is_the_apis_statement(browser, api, march_key):
    response = browser.get(page_url(march_key.pk, "statements") + "2025-03/")
    shown = api.get(api_url(march_key.pk, "statements") + "/2025-03").json()

    assert response.status_code == 200
    page = parse(response.content)
    statement = page.by_id("key-statement")
    text = statement.text
    assert shown["reseller"] == {
        "display_name": "Acme Resale",
        "support_email": "help@acme.example",
    }
    assert "Acme Resale" in text and "help@acme.example" in text
    assert "Statement · March 2025" in text
    assert "1 March 2025 – 31 March 2025" in text
    assert shown["period"]["timezone"] in text
    assert march_key.display_key in text
    totals = shown["totals"]
    assert totals["requests"] == 4
    assert stats(page, "key-statement") == {
        "Amount": money(totals["client_price"]),
        "Requests": thousands(totals["requests"]),
        "Tokens in": thousands(totals["input_tokens"]),
        "Cached input tokens": thousands(totals["cached_input_tokens"]),
    }
    assert stat_notes(page, "key-statement") == {
        "Tokens in": f"{thousands(totals['output_tokens'])} out",
        "Cached input tokens": f"Caching saved {money(totals['cache_savings'])}",
    }
    assert table_rows(page, "key-statement-by-model") == [
        [
            m["model"],
            thousands(m["requests"]),
            thousands(m["input_tokens"]),
            thousands(m["output_tokens"]),
            thousands(m["cached_input_tokens"]),
            money(m["cache_savings"]),
            money(m["client_price"]),
        ]
        for m in shown["by_model"]
    ]
    assert table_rows(page, "key-statement-by-model", part="tfoot") == [
        [
            "Total",
            thousands(totals["requests"]),
            thousands(totals["input_tokens"]),
            thousands(totals["output_tokens"]),
            thousands(totals["cached_input_tokens"]),
            money(totals["cache_savings"]),
            money(totals["client_price"]),
        ]
    ]
    assert table_rows(page, "key-statement-by-day") == [
        [day_text(d["date"]), thousands(d["requests"]), money(d["client_price"])]
        for d in shown["by_day"]
    ]
    assert [r[0] for r in table_rows(page, "key-statement-by-day")] == [
        "Sat 1 Mar 2025",
        "Mon 17 Mar 2025",
        "Mon 31 Mar 2025",
    ]
    # Client prices only: never the reseller's cost or profit.
    html = response.content.decode().lower()
    assert "cost" not in html and "profit" not in html and "margin" not in html


def test_the_statement_csv_is_the_apis_csv(browser, api, march_key):
    mine = browser.get(page_url(march_key.pk, "statements") + "2025-03/", {"format": "csv"})
    theirs = api.get(api_url(march_key.pk, "statements") + "/2025-03", {"format": "csv"})

    assert mine["Content-Type"] == theirs["Content-Type"] == "text/csv; charset=utf-8"
    assert mine["Content-Disposition"] == theirs["Content-Disposition"]
    assert f'filename="statement-{march_key.prefix}-2025-03.csv"' in mine["Content-Disposition"]
    assert body(mine) == body(theirs)
    assert [r["section"] for r in table(mine)] == ["total", "model", "model", "day", "day", "day"]


def test_the_month_picker_offers_the_months_since_the_key_was_created(browser, march_key):
    response = browser.get(page_url(march_key.pk, "statements") + "2025-03/")
    page = parse(response.content)
    today = timezone.now().astimezone(KOLKATA).date()

    picker = page.by_id("key-statement-month")
    offered = [option.attrs["value"] for option in picker.find_all("option")]
    assert offered[0] == f"{today:%Y-%m}"
    assert offered[-1] == "2025-02"
    assert len(offered) == (today.year - 2025) * 12 + today.month - 1
    assert [o.attrs["value"] for o in picker.find_all("option") if "selected" in o.attrs] == [
        "2025-03"
    ]
    steps = {
        a.text: a.attrs["href"]
        for a in page.by_id("key-statement").find_all("a")
        if "rel" in a.attrs
    }
    assert steps == {
        "← Previous": f"/dashboard/keys/{march_key.pk}/statements/2025-02/",
        "Next →": f"/dashboard/keys/{march_key.pk}/statements/2025-04/",
    }
    # Without JavaScript the picker's form asks the statements' address, which redirects.
    chosen = browser.get(page_url(march_key.pk, "statements"), {"month": "2025-04"})
    assert chosen.status_code == 302
    assert chosen["Location"] == f"/dashboard/keys/{march_key.pk}/statements/2025-04/"
    current = browser.get(page_url(march_key.pk, "statements"))
    assert current["Location"] == f"/dashboard/keys/{march_key.pk}/statements/{today:%Y-%m}/"


def test_the_statement_prints_without_the_controls(browser, march_key):
    response = browser.get(page_url(march_key.pk, "statements") + "2025-03/")
    page = parse(response.content)

    (controls,) = page.find_all(cls="statement-controls")
    assert "no-print" in controls.classes
    (print_button,) = [b for b in controls.find_all("button") if "data-print" in b.attrs]
    assert "data-print" in print_button.attrs and "hidden" in print_button.attrs
    assert "no-print" in page.find_all("header", cls="key-report-header")[0].classes


@pytest.mark.parametrize("month", ["2025-13", "2025-3", "1999-12", "2999-01", "march"])
def test_a_month_the_api_refuses_is_not_found(browser, march_key, month):
    assert browser.get(page_url(march_key.pk, "statements") + f"{month}/").status_code == 404

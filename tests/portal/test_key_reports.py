"""A bound key's reports in the portal: usage (windows, months, charts, CSV), requests
(filters, keyset pages, streamed CSV) and the monthly statement (printable, CSV), in the
client's prices and with the client's columns only."""

from __future__ import annotations

import csv
import io
import json
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from accounts.models import Tenant
from billing.models import ModelPrice
from keys.models import ClientKey
from tests.dashboard.pages import Node, parse, stats, table_rows
from tests.dashboard.traffic import refused, served
from tests.keys.apis.conftest import prepaid_key
from tests.portal.conftest import bound, portal_session
from tests.portal.key_traffic import (
    CLIENT_SPENT,
    RESELLER_NAME,
    SUPPORT_EMAIL,
    Traffic,
    acme,
    worked_example,
)
from tests.usage.factories import TraceFactory
from tests.usage.test_exports import body
from usage.models import Trace

pytestmark = pytest.mark.usefixtures("books_balance")


@pytest.fixture
def traffic(tenant: Tenant, price: ModelPrice) -> Traffic:
    return worked_example(acme(tenant), price)


@pytest.fixture
def browser(traffic: Traffic) -> Client:
    browser, client = portal_session("ann@example.com")
    bound(client, traffic.key)
    return browser


def url(key: ClientKey, report: str) -> str:
    return f"/portal/keys/{key.pk}/{report}/"


def page(response: Any, status: int = 200) -> Node:
    assert response.status_code == status, response.content[:500]
    return parse(response.content)


def csv_rows(response: Any) -> tuple[list[str], list[dict[str, str]]]:
    assert response.status_code == 200, response.content[:500]
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert response["Content-Disposition"].startswith('attachment; filename="')
    reader = csv.DictReader(io.StringIO(body(response), newline=""))
    rows = list(reader)
    return list(reader.fieldnames or []), rows


def this_month(key: ClientKey) -> str:
    return f"{timezone.now().astimezone(key.tenant.zone):%Y-%m}"


# --------------------------------------------------------------------------------- usage


@pytest.mark.parametrize("query", [{}, {"window": "30d"}, {"window": "7d"}, {"window": "90d"}])
def test_the_usage_page_shows_the_spend_by_model_and_day(browser, traffic, query):
    shown = page(browser.get(url(traffic.key, "usage"), query))
    assert stats(shown, "key-usage") == {
        "Spent": f"${CLIENT_SPENT}",
        "Requests": "3",
        "Tokens in": "20,000,000",
        "Cached input tokens": "1,040,000",
    }
    assert table_rows(shown, "key-usage-by-model") == [
        ["mock-gpt", "3", "1", "20,000,000", "0", "1,040,000", "$34.20", "$0.87"]
    ]
    assert table_rows(shown, "key-usage-by-model", part="tfoot") == [
        ["Total", "3", "1", "20,000,000", "0", "1,040,000", "$34.20", "$0.87"]
    ]
    by_day = table_rows(shown, "key-usage-by-day")
    assert sum(int(row[1]) for row in by_day) == 3
    assert sorted(row[6] for row in by_day) in (["$14.20", "$20.00"], ["$0.00", "$14.20", "$20.00"])
    current = [a.text for a in shown.find_all("a") if a.attrs.get("aria-current") == "true"]
    assert current == [f"{query.get('window', '30d')[:-1]} days"]


def test_the_usage_charts_carry_the_spend_of_every_day_and_model(browser, traffic):
    shown = page(browser.get(url(traffic.key, "usage"), {"window": "7d"}))
    by_day = json.loads(shown.by_id("key-usage-spend-by-day").text)
    assert len(by_day["labels"]) in (7, 8)  # every local day the 7 days touch
    assert sorted(d for d in by_day["datasets"][0]["data"] if d != "0.00") == ["14.20", "20.00"]
    by_model = json.loads(shown.by_id("key-usage-spend-by-model").text)
    assert by_model == {
        "labels": ["mock-gpt"],
        "datasets": [
            {
                "label": "Spend",
                "data": ["34.20"],
                "borderColor": "#0172ad",
                "backgroundColor": "#0172ad",
            }
        ],
    }


def test_a_month_of_usage(browser, traffic):
    shown = page(browser.get(url(traffic.key, "usage"), {"month": this_month(traffic.key)}))
    assert "Spent" in stats(shown, "key-usage")
    # the month is picked, no window is
    assert not [a for a in shown.find_all("a") if a.attrs.get("aria-current") == "true"]
    (selected,) = [o for o in shown.find_all("option") if "selected" in o.attrs]
    assert selected.attrs["value"] == this_month(traffic.key)


@pytest.mark.parametrize(
    "query", [{"window": "12d"}, {"window": "x"}, {"month": "2025-13"}, {"month": "2999-01"}]
)
def test_a_usage_query_that_cannot_be_read_is_a_400_page(browser, traffic, query):
    shown = page(browser.get(url(traffic.key, "usage"), query), 400)
    assert "This usage cannot be shown." in shown.text
    assert not shown.has_id("key-usage-by-model")
    # nor is it a CSV
    response = browser.get(url(traffic.key, "usage"), {**query, "format": "csv"})
    assert response.status_code == 400
    assert response["Content-Type"].startswith("text/html")


def test_htmx_gets_the_usage_fragment_alone(browser, traffic):
    response = browser.get(url(traffic.key, "usage"), {"window": "7d"}, HTTP_HX_REQUEST="true")
    assert response.status_code == 200
    text = response.content.decode()
    assert text.lstrip().startswith('<section id="key-usage"')
    assert "<html" not in text and "key-report-header" not in text
    assert "HX-Request" in response["Vary"]
    assert 'hx-push-url="true"' in text
    # embedded in the key's page, its links do not change the address bar
    embedded = browser.get(
        url(traffic.key, "usage"),
        {"window": "7d"},
        HTTP_HX_REQUEST="true",
        HTTP_HX_CURRENT_URL=f"http://testserver/portal/keys/{traffic.key.pk}/",
    )
    assert "hx-push-url" not in embedded.content.decode()


def test_the_usage_csv_has_the_clients_columns_only(browser, traffic):
    columns, rows = csv_rows(browser.get(url(traffic.key, "usage"), {"format": "csv"}))
    assert columns == [
        "section",
        "date",
        "model",
        "requests",
        "errors",
        "input_tokens",
        "output_tokens",
        "cached_input_tokens",
        "cache_write_tokens",
        "spend_usd",
        "cache_savings_usd",
    ]
    total, model, *days = rows
    assert total == {
        "section": "total",
        "date": "",
        "model": "",
        "requests": "3",
        "errors": "1",
        "input_tokens": "20000000",
        "output_tokens": "0",
        "cached_input_tokens": "1040000",
        "cache_write_tokens": "0",
        "spend_usd": "34.20",
        "cache_savings_usd": "0.866666667",
    }
    assert model == {**total, "section": "model", "model": "mock-gpt"}
    assert {d["section"] for d in days} == {"day"}
    assert sorted(d["spend_usd"] for d in days if d["spend_usd"] != "0.00") == ["14.20", "20.00"]


# ------------------------------------------------------------------------------ requests


def test_the_requests_page_lists_the_clients_columns_newest_first(browser, traffic):
    shown = page(browser.get(url(traffic.key, "requests")))
    rows = table_rows(shown, "key-requests-table")
    assert [row[1:] for row in rows] == [
        ["mock-gpt", "OK", "8,000,000", "0", "1,040,000", "$14.20", "1,210 ms"],
        ["mock-gpt", "Failed", "0", "0", "0", "$0.00", "120 ms"],
        ["mock-gpt", "OK", "12,000,000", "0", "0", "$20.00", "950 ms"],
    ]
    headers = table_rows(shown, "key-requests-table", part="thead")
    assert headers == [
        ["Time", "Model", "Status", "Tokens in", "Out", "Cached", "Price", "Latency"]
    ]
    assert "times in Asia/Kolkata" in shown.text
    assert "mock-openai" not in shown.text  # the upstream is the reseller's business


@pytest.mark.parametrize(
    ("query", "statuses"),
    [
        ({"status": "ok"}, ["OK", "OK"]),
        ({"status": "error"}, ["Failed", "Refused"]),
        ({"status": "stopped"}, ["Stopped early"]),
        ({"model": "mock-gpt", "status": "ok"}, ["OK", "OK"]),
        ({"model": "other-model"}, []),
    ],
)
def test_the_requests_filter_by_status_and_model(browser, traffic, query, statuses):
    now = timezone.now()
    refused(traffic.key, request_id="req-refused", at=now - timedelta(days=3), model="mock-gpt")
    TraceFactory.create(
        client_key=traffic.key,
        created_at=now - timedelta(days=4),
        status=Trace.Status.CLIENT_DISCONNECTED,
        status_code=200,
    )
    shown = page(browser.get(url(traffic.key, "requests"), query))
    if statuses:
        assert [row[2] for row in table_rows(shown, "key-requests-table")] == statuses
    else:
        assert "No requests match these filters." in shown.text


@pytest.mark.parametrize(
    "query",
    [{"status": "refused"}, {"before": "nonsense"}, {"after": "1-2", "before": "1-2"}],
)
def test_requests_filters_that_cannot_be_read_are_a_400_page(browser, traffic, query):
    shown = page(browser.get(url(traffic.key, "requests"), query), 400)
    assert not shown.has_id("key-requests-table")
    assert shown.find_all(cls="form-error")


def test_keyset_pages_walk_the_requests_both_ways(tenant, price, monkeypatch):
    monkeypatch.setattr("portal.key_reports.REQUESTS_PAGE_SIZE", 4)
    key = prepaid_key(acme(tenant))
    now = timezone.now()
    same_moment = now - timedelta(minutes=30)
    for n in range(10):
        # two pairs share a created_at: ties are ordered by id
        at = same_moment if n in (4, 5) else now - timedelta(minutes=n)
        TraceFactory.create(client_key=key, created_at=at, request_id=f"req-page-{n}")
    browser, client = portal_session("ann@example.com")
    bound(client, key)
    expected = [
        t.request_id for t in Trace.objects.filter(client_key=key).order_by("-created_at", "-id")
    ]

    def walk(link: str) -> tuple[list[str], str | None, str | None]:
        """The request ids a page lists, and its links to the older and newer pages."""
        shown = page(browser.get(link))
        ids = (
            [
                row.attrs["data-request"]
                for row in shown.by_id("key-requests-table").find_all("tr")[1:]
            ]
            if shown.has_id("key-requests-table")
            else []
        )
        older = [a.attrs["href"] for a in shown.find_all("a") if a.attrs.get("rel") == "next"]
        newer = [a.attrs["href"] for a in shown.find_all("a") if a.attrs.get("rel") == "prev"]
        return ids, older[0] if older else None, newer[0] if newer else None

    first, older, newer = walk(url(key, "requests"))
    assert first == expected[:4] and newer is None and older is not None
    second, older, newer = walk(older)
    assert second == expected[4:8] and newer is not None and older is not None
    third, last_older, third_newer = walk(older)
    assert third == expected[8:] and last_older is None and third_newer is not None
    # and back
    back, _, _ = walk(third_newer)
    assert back == expected[4:8]
    back, _, newest = walk(newer)
    assert back == expected[:4] and newest is None
    # a request arriving meanwhile does not shift a page
    TraceFactory.create(client_key=key, created_at=timezone.now(), request_id="req-page-new")
    again, _, _ = walk(older)
    assert again == expected[8:]


def test_a_page_of_requests_costs_the_same_queries_however_many_there_are(tenant):
    key = prepaid_key(acme(tenant))
    browser, client = portal_session("ann@example.com")
    bound(client, key)

    def queries(count: int) -> int:
        now = timezone.now()
        for n in range(count):
            TraceFactory.create(client_key=key, created_at=now - timedelta(seconds=n))
        with CaptureQueriesContext(connection) as captured:
            assert browser.get(url(key, "requests")).status_code == 200
            assert browser.get(f"/portal/keys/{key.pk}/").status_code == 200
        return len(captured)

    assert queries(3) == queries(70)


def test_the_requests_csv_streams_every_request_with_the_clients_columns(browser, traffic):
    response = browser.get(url(traffic.key, "requests"), {"format": "csv"})
    assert response.streaming
    columns, rows = csv_rows(response)
    assert columns == [
        "request_id",
        "time",
        "model",
        "status",
        "http_status",
        "stream",
        "input_tokens",
        "output_tokens",
        "cached_input_tokens",
        "cache_write_tokens",
        "spend_usd",
        "cache_savings_usd",
        "latency_ms",
        "first_token_ms",
    ]
    assert [r["request_id"] for r in rows] == [
        traffic.second_request_id,
        traffic.failed_request_id,
        traffic.first_request_id,
    ]
    second = rows[0]
    trace = Trace.objects.get(request_id=traffic.second_request_id)
    assert second == {
        "request_id": traffic.second_request_id,
        "time": timezone.localtime(trace.created_at, traffic.key.tenant.zone).isoformat(),
        "model": "mock-gpt",
        "status": "ok",
        "http_status": "200",
        "stream": "false",
        "input_tokens": "8000000",
        "output_tokens": "0",
        "cached_input_tokens": "1040000",
        "cache_write_tokens": "0",
        "spend_usd": "14.20",
        "cache_savings_usd": "0.866666667",
        "latency_ms": "1210",
        "first_token_ms": "40",
    }
    assert second["time"].endswith("+05:30")
    assert rows[1]["status"] == "error" and rows[1]["http_status"] == "502"
    assert rows[1]["first_token_ms"] == ""


def test_the_requests_csv_follows_the_filters_not_the_page(browser, traffic):
    _, rows = csv_rows(
        browser.get(
            url(traffic.key, "requests"), {"status": "ok", "before": "1-1", "format": "csv"}
        )
    )
    assert [r["request_id"] for r in rows] == [
        traffic.second_request_id,
        traffic.first_request_id,
    ]


def test_the_requests_csv_guards_formula_cells(browser, traffic):
    TraceFactory.create(client_key=traffic.key, model="=HYPERLINK(1)", request_id="+cmd")
    _, rows = csv_rows(browser.get(url(traffic.key, "requests"), {"format": "csv"}))
    assert rows[0]["model"] == "'=HYPERLINK(1)"
    assert rows[0]["request_id"] == "'+cmd"


def test_the_requests_csv_reads_page_after_page(browser, traffic, monkeypatch):
    monkeypatch.setattr("portal.key_reports.EXPORT_PAGE_SIZE", 2)
    _, rows = csv_rows(browser.get(url(traffic.key, "requests"), {"format": "csv"}))
    assert len(rows) == 3
    assert len({r["request_id"] for r in rows}) == 3


# ---------------------------------------------------------------------------- statements


def test_the_statement_is_under_the_resellers_name_in_client_prices(browser, traffic):
    month = this_month(traffic.key)
    shown = page(browser.get(url(traffic.key, f"statements/{month}")))
    head = shown.find_all(cls="statement-from")[0].text
    assert RESELLER_NAME in head and SUPPORT_EMAIL in head
    assert stats(shown, "key-statement")["Amount"] in (f"${CLIENT_SPENT}", "$14.20", "$20.00")
    model_rows = table_rows(shown, "key-statement-by-model")
    assert model_rows[0][0] == "mock-gpt"
    assert (
        table_rows(shown, "key-statement-by-model", part="tfoot")[0][-1]
        == stats(shown, "key-statement")["Amount"]
    )
    assert "Asia/Kolkata" in shown.text


def test_the_statement_csv(browser, traffic):
    month = this_month(traffic.key)
    response = browser.get(url(traffic.key, f"statements/{month}"), {"format": "csv"})
    assert response["Content-Disposition"] == (
        f'attachment; filename="statement-{traffic.key.prefix}-{month}.csv"'
    )
    columns, rows = csv_rows(response)
    assert columns[:3] == ["section", "date", "model"] and "spend_usd" in columns
    assert rows[0]["section"] == "total"
    assert sum(int(r["requests"]) for r in rows if r["section"] == "day") == int(
        rows[0]["requests"]
    )


def test_a_month_without_traffic_is_an_empty_statement(browser, traffic):
    shown = page(browser.get(url(traffic.key, "statements/2024-02")))
    assert "No requests in February 2024." in shown.text
    assert stats(shown, "key-statement")["Amount"] == "$0.00"


@pytest.mark.parametrize("month", ["2024-13", "1999-12", "2999-01", "latest", "2024-1"])
def test_a_month_that_cannot_be_is_not_found(browser, traffic, month):
    assert browser.get(url(traffic.key, f"statements/{month}")).status_code == 404
    assert browser.get(url(traffic.key, f"statements/{month}") + "?format=csv").status_code == 404


def test_the_month_picker_goes_to_the_month_or_to_this_one(browser, traffic):
    key = traffic.key
    response = browser.get(url(key, "statements"), {"month": "2024-02"})
    assert response.status_code == 302
    assert response["Location"] == url(key, "statements/2024-02")
    response = browser.get(url(key, "statements"), {"month": "nonsense"})
    assert response["Location"] == url(key, f"statements/{this_month(key)}")


def test_htmx_gets_the_statement_fragment_alone(browser, traffic):
    response = browser.get(
        url(traffic.key, f"statements/{this_month(traffic.key)}"), HTTP_HX_REQUEST="true"
    )
    text = response.content.decode()
    assert text.lstrip().startswith('<div id="key-statement"')
    assert "<html" not in text


def test_served_helper_is_what_the_figures_read(traffic, price):
    # the reports read the reseller's own selectors: one more request shows everywhere
    served(traffic.key, price, request_id="req-more", at=timezone.now(), input_tokens=600_000)
    browser, client = portal_session("bob@example.com")
    bound(client, traffic.key)
    shown = page(browser.get(url(traffic.key, "usage")))
    assert stats(shown, "key-usage")["Spent"] == "$35.20"

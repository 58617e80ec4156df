"""CSV answers of the trace reports (``?format=csv`` / ``Accept: text/csv``), the streamed
CSV of the request lists, and the tenant-wide request list ``GET /api/v1/requests``."""

from __future__ import annotations

import csv
import io
from datetime import timedelta
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from keys.models import ClientKey
from tests.keys.apis.conftest import create_sub_account, iso, sub_account_url
from tests.keys.factories import WalletKeyFactory
from tests.usage.conftest import (
    BY_TAG,
    EARNINGS,
    SUB_ACCOUNT_BY_TAG,
    requests_url,
    trace,
    usage_url,
)
from usage import exports
from usage.models import Trace

pytestmark = pytest.mark.usefixtures("books_balance", "api_throttle_reset")

REQUESTS = "/api/v1/requests"
USD = 10**9


def body(response: Any) -> str:
    """The whole answer, a streamed one included (its iterator is async: read it as the
    ASGI handler does)."""
    if not response.streaming:
        return response.content.decode()

    async def collect() -> bytes:
        return b"".join([part async for part in response.streaming_content])

    return async_to_sync(collect)().decode()


def table(response: Any) -> list[dict[str, str]]:
    assert response.status_code == 200, response.content
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert response["Content-Disposition"].startswith('attachment; filename="')
    return list(csv.DictReader(io.StringIO(body(response), newline="")))


# ------------------------------------------------------------------------------ reports


def test_key_usage_csv_is_the_json_report_as_one_sectioned_table(api, tenant, outsider):
    key = WalletKeyFactory.create(tenant=tenant)
    two_days_ago = timezone.now() - timedelta(days=2)
    trace(
        key, two_days_ago, model="mock-gpt", input_tokens=10, cost_nanos=USD, client_nanos=2 * USD
    )
    trace(key, model="mock-claude", output_tokens=7, cost_nanos=3 * USD, client_nanos=5 * USD)
    trace(key, model="mock-gpt", status=Trace.Status.REFUSED, status_code=402)

    report = api.get(usage_url(key.pk)).json()
    response = api.get(usage_url(key.pk), {"format": "csv"})
    rows = table(response)

    assert f'filename="key-{key.pk}-usage-' in response["Content-Disposition"]
    assert [(r["section"], r["date"], r["model"]) for r in rows] == [
        ("total", "", ""),
        ("model", "", "mock-claude"),
        ("model", "", "mock-gpt"),
        ("day", report["by_day"][0]["date"], ""),
        ("day", report["by_day"][1]["date"], ""),
    ]
    total = rows[0]
    assert {name: total[name] for name in report["summary"]} == {
        name: str(value) for name, value in report["summary"].items()
    }
    assert (total["requests"], total["errors"], total["profit"]) == ("3", "1", "3.00")
    for row, shown in zip(rows[1:3], report["by_model"], strict=True):
        assert {name: row[name] for name in shown} == {k: str(v) for k, v in shown.items()}
    for row, shown in zip(rows[3:], report["by_day"], strict=True):
        assert {name: row[name] for name in shown} == {k: str(v) for k, v in shown.items()}


def test_csv_is_chosen_by_accept_header_and_json_stays_the_default(api, tenant, outsider):
    key = WalletKeyFactory.create(tenant=tenant)
    trace(key)

    assert api.get(usage_url(key.pk))["Content-Type"] == "application/json"
    assert table(api.get(usage_url(key.pk), HTTP_ACCEPT="text/csv"))[0]["requests"] == "1"
    assert table(api.get(requests_url(key.pk), HTTP_ACCEPT="text/csv"))[0]["key_id"] == str(key.pk)
    assert api.get(EARNINGS, {"format": "json"})["Content-Type"] == "application/json"


def test_errors_stay_json_and_an_unknown_format_is_a_400(api, outsider_api, tenant, outsider):
    key = WalletKeyFactory.create(tenant=tenant)

    unknown = api.get(usage_url(key.pk), {"format": "xml"})
    blank = api.get(BY_TAG, {"format": ""})
    theirs = outsider_api.get(usage_url(key.pk), {"format": "csv"})
    bad_window = api.get(EARNINGS, {"format": "csv", "window": "1w"}, HTTP_ACCEPT="text/csv")

    assert (unknown.status_code, unknown.json()) == (400, {"format": ["One of: json, csv."]})
    assert blank.status_code == 400
    assert (theirs.status_code, theirs["Content-Type"]) == (404, "application/json")
    assert theirs.json() == {"detail": "Not found.", "code": "not_found"}
    assert (bad_window.status_code, bad_window["Content-Type"]) == (400, "application/json")
    assert "window" in bad_window.json()


def test_tag_and_earnings_csv(api, tenant, outsider):
    key = WalletKeyFactory.create(tenant=tenant, label="acme", default_tag="prod")
    loss = WalletKeyFactory.create(tenant=tenant, label="promo")
    trace(key, cost_nanos=USD, client_nanos=3 * USD)
    trace(key, tag="", cost_nanos=USD, client_nanos=USD)
    trace(loss, tag="promo", cost_nanos=2 * USD, client_nanos=USD)
    trace(WalletKeyFactory.create(tenant=outsider[0]), tag="secret", client_nanos=9 * USD)

    tags = table(api.get(BY_TAG, {"format": "csv"}))
    earnings = api.get(EARNINGS, {"format": "csv"})
    per_key = {row["label"]: row for row in table(earnings)}

    assert [(r["tag"], r["requests"], r["client_price"], r["profit"]) for r in tags] == [
        ("prod", "1", "3.00", "2.00"),
        ("", "1", "1.00", "0.00"),
        ("promo", "1", "1.00", "-1.00"),  # a negative amount is a number, not a formula
    ]
    assert 'filename="earnings-' in earnings["Content-Disposition"]
    assert set(per_key) == {"acme", "promo"}
    assert per_key["acme"]["key_id"] == str(key.pk)
    assert (per_key["acme"]["revenue"], per_key["acme"]["margin_percent"]) == ("4.00", "50.00")
    assert (per_key["promo"]["profit"], per_key["promo"]["margin_percent"]) == ("-1.00", "-100.00")
    assert per_key["acme"]["prefix"] == key.prefix


def test_sub_account_csv_is_in_cents(api, tenant, outsider):
    created = create_sub_account(api, spend_cap_cents=1_000, default_tag="team")
    key = ClientKey.objects.get(pk=created["id"])
    trace(key, client_nanos=1_234_567_891, input_tokens=5)
    WalletKeyFactory.create(tenant=tenant)  # not a sub-account: not in /v1/usage/by-tag

    usage = table(api.get(sub_account_url(key.pk, "/usage"), {"format": "csv"}))
    tags = table(api.get(SUB_ACCOUNT_BY_TAG, HTTP_ACCEPT="text/csv"))

    assert list(usage[0]) == [
        "section",
        "date",
        "model",
        "requests",
        "cost_cents",
        "input_tokens",
        "output_tokens",
        "cached_input_tokens",
        "cache_savings_cents",
    ]
    assert [(r["section"], r["cost_cents"]) for r in usage] == [
        ("total", "123"),
        ("model", "123"),
        ("day", "123"),
    ]
    assert [(r["tag"], r["requests"], r["cost_cents"]) for r in tags] == [("team", "1", "123")]


@pytest.mark.parametrize("text", ["=1+2", "+SUM(A1)", "-2+3", "@cmd", "\tx", "\rx"])
def test_client_text_that_could_start_a_formula_is_shown_as_text(api, tenant, outsider, text):
    key = WalletKeyFactory.create(tenant=tenant)
    trace(key, model=text, tag=text, error_class=text)

    usage = table(api.get(usage_url(key.pk), {"format": "csv"}))
    tags = table(api.get(BY_TAG, {"format": "csv"}))
    listed = table(api.get(requests_url(key.pk), {"format": "csv"}))

    assert usage[1]["model"] == "'" + text
    assert tags[0]["tag"] == "'" + text
    assert (listed[0]["model"], listed[0]["tag"]) == ("'" + text, "'" + text)
    assert listed[0]["error_class"] == "'" + text
    assert api.get(usage_url(key.pk)).json()["by_model"][0]["model"] == text  # JSON as is


# ----------------------------------------------------------------------- request lists


def test_request_csv_has_every_matching_row_without_pages(api, tenant, outsider, upstream):
    key = WalletKeyFactory.create(tenant=tenant, label="acme")
    now = timezone.now()
    for minute in range(60):  # more than a JSON page (50)
        trace(key, now - timedelta(minutes=minute + 1), request_id=f"r{minute:02d}", tag="prod")
    trace(key, now - timedelta(hours=5), request_id="old", tag="prod")
    trace(key, now, request_id="staging", tag="staging", upstream=upstream, client_nanos=USD // 4)
    trace(WalletKeyFactory.create(tenant=tenant), request_id="other-key")

    everything = table(api.get(requests_url(key.pk), {"format": "csv", "page_size": 2}))
    prod = table(api.get(requests_url(key.pk), {"format": "csv", "tag": "prod"}))
    recent = table(
        api.get(requests_url(key.pk), {"format": "csv", "since": iso(now - timedelta(hours=1))})
    )
    staging = table(api.get(requests_url(key.pk), {"format": "csv", "tag": "staging"}))[0]

    assert len(everything) == 62
    assert [r["request_id"] for r in everything[:3]] == ["staging", "r00", "r01"]
    assert everything[-1]["request_id"] == "old"
    assert len(prod) == 61 and len(recent) == 61
    assert {r["key_label"] for r in everything} == {"acme"}
    assert (staging["key_id"], staging["key_prefix"]) == (str(key.pk), key.prefix)
    assert (staging["upstream"], staging["client_price"], staging["cost"]) == (
        "mock-openai",
        "0.25",
        "0.00",
    )
    assert (staging["is_stream"], staging["ttft_ms"], staging["status"]) == ("false", "40", "ok")
    assert staging["created_at"].endswith("Z")


def test_a_request_export_streams_async_one_query_per_page(api, tenant, outsider, monkeypatch):
    monkeypatch.setattr(exports, "EXPORT_PAGE_SIZE", 3)
    key = WalletKeyFactory.create(tenant=tenant)
    at = timezone.now() - timedelta(minutes=10)
    # Ties on created_at: the keyset pages by (created_at, id), so none is lost or repeated.
    ids = [trace(key, at - timedelta(minutes=n // 2)).request_id for n in range(7)]

    def export() -> tuple[list[str], int]:
        response = api.get(requests_url(key.pk), {"format": "csv"})
        assert response.streaming and response.is_async
        with CaptureQueriesContext(connection) as queries:
            rows = table(response)
        pages = [q for q in queries.captured_queries if "proxy_trace" in q["sql"]]
        return [r["request_id"] for r in rows], len(pages)

    listed, pages = export()
    assert sorted(listed) == sorted(ids) and len(set(listed)) == 7
    assert pages == 3  # 3 + 3 + 1 rows
    for _ in range(2):
        trace(key, at + timedelta(minutes=1))
    listed, pages = export()
    assert len(set(listed)) == 9
    assert pages == 4  # 3 + 3 + 3, and the empty page that ends it


def test_tenant_wide_requests_list_every_key_newest_first_with_the_key(
    api, outsider_api, tenant, outsider
):
    first = WalletKeyFactory.create(tenant=tenant, label="first")
    second = WalletKeyFactory.create(tenant=tenant, label="second")
    theirs = WalletKeyFactory.create(tenant=outsider[0], label="theirs")
    now = timezone.now()
    trace(first, now - timedelta(minutes=3), request_id="a", model="mock-gpt")
    trace(second, now - timedelta(minutes=2), request_id="b", model="mock-claude")
    trace(first, now - timedelta(minutes=1), request_id="c", model="mock-gpt")
    trace(theirs, now - timedelta(minutes=1), request_id="theirs")

    page = api.get(REQUESTS, {"page_size": 2}).json()
    one_key = api.get(REQUESTS, {"key": first.pk}).json()
    gpt = api.get(REQUESTS, {"model": "mock-gpt", "since": iso(now - timedelta(minutes=2))})
    exported = table(api.get(REQUESTS, {"format": "csv"}))

    assert page["count"] == 3
    assert [t["request_id"] for t in page["results"]] == ["c", "b"]
    assert page["results"][1]["key"] == {
        "id": second.pk,
        "label": "second",
        "prefix": second.prefix,
    }
    assert [t["request_id"] for t in one_key["results"]] == ["c", "a"]
    assert [t["request_id"] for t in gpt.json()["results"]] == ["c"]
    assert [(r["request_id"], r["key_label"]) for r in exported] == [
        ("c", "first"),
        ("b", "second"),
        ("a", "first"),
    ]
    assert api.get(REQUESTS, {"key": theirs.pk}).status_code == 404
    assert api.get(REQUESTS, {"key": theirs.pk, "format": "csv"}).status_code == 404
    assert api.get(REQUESTS, {"key": "x"}).status_code == 400
    assert [t["request_id"] for t in outsider_api.get(REQUESTS).json()["results"]] == ["theirs"]

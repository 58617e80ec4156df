"""The trace reports under ``/api/v1/`` (a key's requests and usage, usage by tag, earnings)
and the sub-account API's usage reports under ``/v1/`` (in cents), through the HTTP client.

Trace rows are written with ``TraceFactory`` as the proxy would batch them; key counters
(the all-time figures) come from the real reserve/settle flow. What another tenant gets
from these endpoints is tested in ``test_access``.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
from django.utils import timezone

from billing.money import Usage, parse_usd
from config.pagination import Pagination
from keys.models import ClientKey
from keys.services import key_create, key_delete
from tests.keys.apis.conftest import create_sub_account, iso, prepaid_key, sub_account_url
from tests.keys.factories import WalletKeyFactory
from tests.metering import charge
from tests.usage.conftest import (
    BY_TAG,
    EARNINGS,
    SUB_ACCOUNT_BY_TAG,
    requests_url,
    today_midnight,
    trace,
    usage_url,
)
from usage.apis import EarningsApi, TenantUsageApi, key_earnings_json, key_usage_json
from usage.models import Trace
from usage.selectors import earnings_summary, tenant_usage

pytestmark = pytest.mark.usefixtures("books_balance", "api_throttle_reset")


def spend(key: ClientKey, price: Any, request_id: str, input_tokens: int) -> None:
    """Settle one request the way the proxy does (reserve, settle): moves the key counters."""
    usage = Usage(input_tokens=input_tokens)
    charge(key=key, price=price, request_id=request_id, usage=usage)


# ------------------------------------------------------------------------- key requests


def test_requests_show_every_field_of_the_keys_traces(api, tenant, outsider, upstream):
    key = WalletKeyFactory.create(tenant=tenant)
    at = timezone.now() - timedelta(minutes=3)
    trace(
        key,
        at,
        request_id="req-full",
        tag="prod",
        endpoint="messages",
        model="mock-claude",
        upstream=upstream,
        upstream_model="claude-x",
        is_stream=True,
        input_tokens=1_200,
        output_tokens=345,
        cached_input_tokens=600,
        cache_write_tokens=70,
        is_usage_estimated=True,
        cost_nanos=1_234_567_891,
        client_nanos=2_057_613_152,
        cache_savings_nanos=1_350_000,
        client_cache_savings_nanos=2_250_001,
        status=Trace.Status.CLIENT_DISCONNECTED,
        status_code=200,
        error_class="client_disconnected",
        latency_ms=1_500,
        ttft_ms=210,
    )
    trace(WalletKeyFactory.create(tenant=tenant), request_id="req-other-key")

    response = api.get(requests_url(key.pk))

    assert response.status_code == 200
    assert response.json() == {
        "count": 1,
        "count_is_exact": True,
        "next": None,
        "previous": None,
        "results": [
            {
                "request_id": "req-full",
                "created_at": iso(at),
                "model": "mock-claude",
                "endpoint": "messages",
                "upstream": "mock-openai",
                "tag": "prod",
                "status": "client_disconnected",
                "status_code": 200,
                "error_class": "client_disconnected",
                "is_stream": True,
                "input_tokens": 1_200,
                "output_tokens": 345,
                "cached_input_tokens": 600,
                "cache_write_tokens": 70,
                "is_usage_estimated": True,
                "cost": "1.234567891",
                "client_price": "2.057613152",
                "cache_savings": "0.00135",
                "client_cache_savings": "0.002250001",
                "latency_ms": 1_500,
                "ttft_ms": 210,
            }
        ],
    }


def test_a_refused_request_has_no_upstream_and_no_first_token(api, tenant, outsider):
    key = WalletKeyFactory.create(tenant=tenant)
    trace(
        key,
        status=Trace.Status.REFUSED,
        status_code=402,
        error_class="insufficient_funds",
        ttft_ms=None,
        latency_ms=2,
    )

    shown = api.get(requests_url(key.pk)).json()["results"][0]

    assert shown["upstream"] is None
    assert shown["ttft_ms"] is None
    assert (shown["status"], shown["status_code"]) == ("refused", 402)
    assert (shown["cost"], shown["client_price"]) == ("0.00", "0.00")
    assert (shown["cache_savings"], shown["client_cache_savings"]) == ("0.00", "0.00")


def test_requests_are_paginated_newest_first(api, tenant, outsider):
    key = WalletKeyFactory.create(tenant=tenant)
    now = timezone.now()
    for minutes in (5, 1, 4, 2, 3):
        trace(key, now - timedelta(minutes=minutes), request_id=f"req-{minutes}m")

    first = api.get(requests_url(key.pk), {"page_size": 2}).json()
    last = api.get(requests_url(key.pk), {"page_size": 2, "page": 3}).json()

    assert first["count"] == 5
    assert [t["request_id"] for t in first["results"]] == ["req-1m", "req-2m"]
    assert "page=2" in first["next"]
    assert [t["request_id"] for t in last["results"]] == ["req-5m"]
    assert last["next"] is None
    assert api.get(requests_url(key.pk), {"page": 4}).status_code == 404


def test_a_long_list_counts_up_to_the_limit_and_says_so(api, tenant, outsider, monkeypatch):
    monkeypatch.setattr(Pagination, "count_limit", 3)
    key = WalletKeyFactory.create(tenant=tenant)
    now = timezone.now()
    for minutes in range(1, 7):
        trace(key, now - timedelta(minutes=minutes), request_id=f"req-{minutes}m")
    trace(WalletKeyFactory.create(tenant=outsider[0]), now, request_id="theirs")

    def page(**params: Any) -> dict[str, Any]:
        response = api.get(requests_url(key.pk), {"page_size": 2, **params})
        assert response.status_code == 200, response.content
        return response.json()

    first, second, last = page(), page(page=2), page(page=3)
    everyone = api.get("/api/v1/requests", {"page_size": 2}).json()

    # 6 rows, counted only up to 3: a lower bound, and the pages still say what follows.
    assert (first["count"], first["count_is_exact"]) == (3, False)
    assert [t["request_id"] for t in first["results"]] == ["req-1m", "req-2m"]
    assert "page=2" in first["next"]
    # Past the limit the rows read so far (and the one more that makes ``next``) bound it.
    assert (second["count"], second["count_is_exact"]) == (5, False)
    assert "page=3" in second["next"]
    # The last page knows the count exactly, without counting.
    assert (last["count"], last["count_is_exact"], last["next"]) == (6, True, None)
    assert [t["request_id"] for t in last["results"]] == ["req-5m", "req-6m"]
    assert api.get(requests_url(key.pk), {"page_size": 2, "page": 4}).status_code == 404
    assert (everyone["count"], everyone["count_is_exact"]) == (3, False)
    assert "theirs" not in [t["request_id"] for t in everyone["results"]]


def test_a_page_beyond_any_offset_is_past_the_last(api, tenant):
    key = WalletKeyFactory.create(tenant=tenant)
    trace(key, timezone.now())

    response = api.get(requests_url(key.pk), {"page": "999999999999999999", "page_size": 200})

    assert response.status_code == 404


def test_requests_filter_by_time_model_status_and_tag(api, tenant, outsider):
    key = WalletKeyFactory.create(tenant=tenant)
    base = timezone.now() - timedelta(hours=10)
    trace(key, base, request_id="a", model="mock-gpt", tag="prod")
    trace(key, base + timedelta(hours=1), request_id="b", model="mock-claude", tag="")
    trace(
        key,
        base + timedelta(hours=2),
        request_id="c",
        model="mock-gpt",
        tag="staging",
        status=Trace.Status.UPSTREAM_ERROR,
        status_code=502,
    )
    trace(key, base + timedelta(hours=3), request_id="d", model="mock-gpt", tag="prod")

    def listed(**params: str) -> list[str]:
        response = api.get(requests_url(key.pk), params)
        assert response.status_code == 200, response.content
        return [t["request_id"] for t in response.json()["results"]]

    assert listed() == ["d", "c", "b", "a"]
    # since is inclusive, until exclusive.
    assert listed(since=iso(base + timedelta(hours=1))) == ["d", "c", "b"]
    assert listed(until=iso(base + timedelta(hours=2))) == ["b", "a"]
    assert listed(since=iso(base + timedelta(hours=1)), until=iso(base + timedelta(hours=3))) == [
        "c",
        "b",
    ]
    # Another offset names the same instant.
    plus_two = (base + timedelta(hours=3)).astimezone(timezone.get_fixed_timezone(120))
    assert listed(since=plus_two.isoformat()) == ["d"]
    assert listed(model="mock-gpt") == ["d", "c", "a"]
    assert listed(model="unknown-model") == []
    assert listed(status="upstream_error") == ["c"]
    assert listed(tag="prod") == ["d", "a"]
    assert listed(tag="") == ["b"]
    assert listed(model="mock-gpt", tag="prod", since=iso(base + timedelta(minutes=1))) == ["d"]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        pytest.param({"since": "yesterday"}, "since", id="since-not-a-date"),
        pytest.param({"until": "2025-13-01T00:00:00Z"}, "until", id="until-no-such-month"),
        pytest.param({"status": "failed"}, "status", id="unknown-status"),
        pytest.param({"model": "m" * 201}, "model", id="model-too-long"),
        pytest.param(
            {"since": "2025-01-02T00:00:00Z", "until": "2025-01-01T00:00:00Z"},
            "until",
            id="until-before-since",
        ),
        pytest.param(
            {"since": "2025-01-01T00:00:00Z", "until": "2025-01-01T00:00:00Z"},
            "until",
            id="empty-range",
        ),
    ],
)
def test_requests_refuse_bad_filters_naming_the_field(api, tenant, outsider, params, field):
    key = WalletKeyFactory.create(tenant=tenant)
    trace(key)

    response = api.get(requests_url(key.pk), params)

    assert response.status_code == 400
    assert list(response.json()) == [field]


def test_a_deleted_keys_requests_stay_readable(api, tenant, outsider):
    key = WalletKeyFactory.create(tenant=tenant)
    trace(key, request_id="before-delete")
    key_delete(tenant=tenant, actor=None, key_id=key.pk)

    response = api.get(requests_url(key.pk))

    assert response.status_code == 200
    assert [t["request_id"] for t in response.json()["results"]] == ["before-delete"]


# ---------------------------------------------------------------------------- key usage


def test_key_usage_adds_up_to_the_nano_per_model_and_per_utc_day(api, tenant, outsider):
    key = WalletKeyFactory.create(tenant=tenant)
    midnight = today_midnight()
    before_midnight = midnight - timedelta(microseconds=1)
    two_days_ago = midnight - timedelta(days=2) + timedelta(hours=12)
    trace(
        key,
        before_midnight,
        input_tokens=1_000,
        output_tokens=500,
        cached_input_tokens=200,
        cost_nanos=1_234_567_891,
        client_nanos=2_057_613_152,
        cache_savings_nanos=250_000_001,
        client_cache_savings_nanos=416_666_669,
    )
    trace(key, midnight, input_tokens=10, cost_nanos=1, client_nanos=2)
    trace(
        key,
        two_days_ago,
        model="mock-claude",
        status=Trace.Status.CLIENT_DISCONNECTED,
        input_tokens=3_000,
        output_tokens=1,
        cache_write_tokens=50,
        cost_nanos=999_999_999,
        client_nanos=1_666_666_665,
    )
    for status in (Trace.Status.UPSTREAM_ERROR, Trace.Status.REFUSED):
        trace(key, two_days_ago, model="mock-claude", status=status, status_code=502)
    # Outside the window, and another key of the same tenant: neither counts.
    trace(key, timezone.now() - timedelta(days=30, minutes=1), cost_nanos=10**9, client_nanos=10**9)
    trace(WalletKeyFactory.create(tenant=tenant), cost_nanos=10**9, client_nanos=10**9)

    response = api.get(usage_url(key.pk), {"window": "30d"})

    assert response.status_code == 200
    body = response.json()
    assert body["window"] == "30d"
    since, until = datetime.fromisoformat(body["since"]), datetime.fromisoformat(body["until"])
    assert until - since == timedelta(days=30)
    assert abs(until - timezone.now()) < timedelta(minutes=1)
    assert body["summary"] == {
        "requests": 5,
        "errors": 2,
        "input_tokens": 4_010,
        "output_tokens": 501,
        "cached_input_tokens": 200,
        "cache_write_tokens": 50,
        "cost": "2.234567891",
        "client_price": "3.724279819",
        "cache_savings": "0.250000001",
        "client_cache_savings": "0.416666669",
        "profit": "1.489711928",
    }
    assert body["by_model"] == [
        {
            "model": "mock-gpt",
            "requests": 2,
            "input_tokens": 1_010,
            "output_tokens": 500,
            "cached_input_tokens": 200,
            "cache_write_tokens": 0,
            "cost": "1.234567892",
            "client_price": "2.057613154",
            "cache_savings": "0.250000001",
            "client_cache_savings": "0.416666669",
        },
        {
            "model": "mock-claude",
            "requests": 3,
            "input_tokens": 3_000,
            "output_tokens": 1,
            "cached_input_tokens": 0,
            "cache_write_tokens": 50,
            "cost": "0.999999999",
            "client_price": "1.666666665",
            "cache_savings": "0.00",
            "client_cache_savings": "0.00",
        },
    ]
    assert body["by_day"] == [
        {
            "date": two_days_ago.date().isoformat(),
            "requests": 3,
            "cost": "0.999999999",
            "client_price": "1.666666665",
        },
        {
            "date": before_midnight.date().isoformat(),
            "requests": 1,
            "cost": "1.234567891",
            "client_price": "2.057613152",
        },
        {
            "date": midnight.date().isoformat(),
            "requests": 1,
            "cost": "0.000000001",
            "client_price": "0.000000002",
        },
    ]


def test_key_usage_without_traffic_is_all_zeros(api, tenant, outsider):
    key = WalletKeyFactory.create(tenant=tenant)

    body = api.get(usage_url(key.pk)).json()

    assert body["window"] == "30d"
    assert body["summary"] == {
        "requests": 0,
        "errors": 0,
        "input_tokens": 0,
        "output_tokens": 0,
        "cached_input_tokens": 0,
        "cache_write_tokens": 0,
        "cost": "0.00",
        "client_price": "0.00",
        "cache_savings": "0.00",
        "client_cache_savings": "0.00",
        "profit": "0.00",
    }
    assert (body["by_model"], body["by_day"]) == ([], [])


@pytest.mark.parametrize(
    ("window", "label", "inside", "outside"),
    [
        pytest.param(None, "30d", timedelta(days=29), timedelta(days=30, minutes=1), id="default"),
        pytest.param("1h", "1h", timedelta(minutes=59), timedelta(minutes=61), id="1h"),
        pytest.param("24h", "24h", timedelta(hours=23), timedelta(hours=25), id="24h"),
        pytest.param("7d", "7d", timedelta(days=6), timedelta(days=7, minutes=1), id="7d"),
        pytest.param("0366d", "366d", timedelta(days=365), timedelta(days=367), id="366d"),
        pytest.param("8784h", "8784h", timedelta(days=365), timedelta(days=367), id="8784h"),
    ],
)
def test_key_usage_counts_only_the_window(api, tenant, outsider, window, label, inside, outside):
    key = WalletKeyFactory.create(tenant=tenant)
    now = timezone.now()
    trace(key, now - inside, cost_nanos=7, client_nanos=11)
    trace(key, now - outside, cost_nanos=1_000, client_nanos=1_000)

    body = api.get(usage_url(key.pk), {} if window is None else {"window": window}).json()

    assert body["window"] == label
    assert body["summary"]["requests"] == 1
    assert (body["summary"]["cost"], body["summary"]["client_price"]) == (
        "0.000000007",
        "0.000000011",
    )


BAD_WINDOWS = [
    *["30", "d", "0h", "0d", "367d", "8785h", "30m", "1w", "-1d", "1.5d", "30 d", "99999d"],
    # Blank is not "the default" (leave the parameter out for that); no spaces, no
    # digits but ASCII ones.
    *["", " 30d", "30d ", "30d\n", "٣٠d", "30D"],
]


@pytest.mark.parametrize("window", BAD_WINDOWS)
def test_key_usage_refuses_a_bad_window(api, tenant, outsider, window):
    key = WalletKeyFactory.create(tenant=tenant)

    response = api.get(usage_url(key.pk), {"window": window})

    assert response.status_code == 400
    assert list(response.json()) == ["window"]


def test_a_deleted_keys_usage_stays_readable(api, tenant, outsider):
    key = WalletKeyFactory.create(tenant=tenant)
    trace(key, cost_nanos=5, client_nanos=5)
    key_delete(tenant=tenant, actor=None, key_id=key.pk)

    body = api.get(usage_url(key.pk)).json()

    assert body["summary"]["requests"] == 1


# ----------------------------------------------------------------------- usage by tag


def test_usage_by_tag_groups_the_tenants_keys_with_untagged_as_empty(
    api, outsider_api, tenant, outsider
):
    first, second = WalletKeyFactory.create(tenant=tenant), WalletKeyFactory.create(tenant=tenant)
    trace(first, tag="prod", input_tokens=100, cost_nanos=600_000_001, client_nanos=1_000_000_002)
    trace(second, tag="prod", output_tokens=7, cost_nanos=3, client_nanos=5)
    trace(
        first,
        tag="",
        cached_input_tokens=9,
        cost_nanos=250_000_000,
        client_nanos=250_000_000,
        cache_savings_nanos=7,
        client_cache_savings_nanos=12,
    )
    trace(
        second,
        tag="staging",
        status=Trace.Status.UPSTREAM_ERROR,
        status_code=500,
        cost_nanos=0,
        client_nanos=0,
    )
    trace(second, timezone.now() - timedelta(days=31), tag="old", cost_nanos=9, client_nanos=9)
    theirs = WalletKeyFactory.create(tenant=outsider[0])
    trace(theirs, tag="prod", cost_nanos=10**9, client_nanos=10**9)

    body = api.get(BY_TAG, {"window": "30d"}).json()

    assert body["window"] == "30d"
    assert body["by_tag"] == [
        {
            "tag": "prod",
            "requests": 2,
            "input_tokens": 100,
            "output_tokens": 7,
            "cached_input_tokens": 0,
            "cache_write_tokens": 0,
            "cost": "0.600000004",
            "client_price": "1.000000007",
            "cache_savings": "0.00",
            "client_cache_savings": "0.00",
            "profit": "0.400000003",
            "errors": 0,
        },
        {
            "tag": "",
            "requests": 1,
            "input_tokens": 0,
            "output_tokens": 0,
            "cached_input_tokens": 9,
            "cache_write_tokens": 0,
            "cost": "0.25",
            "client_price": "0.25",
            "cache_savings": "0.000000007",
            "client_cache_savings": "0.000000012",
            "profit": "0.00",
            "errors": 0,
        },
        {
            "tag": "staging",
            "requests": 1,
            "input_tokens": 0,
            "output_tokens": 0,
            "cached_input_tokens": 0,
            "cache_write_tokens": 0,
            "cost": "0.00",
            "client_price": "0.00",
            "cache_savings": "0.00",
            "client_cache_savings": "0.00",
            "profit": "0.00",
            "errors": 1,
        },
    ]
    theirs_body = outsider_api.get(BY_TAG).json()
    assert [(t["tag"], t["requests"], t["cost"]) for t in theirs_body["by_tag"]] == [
        ("prod", 1, "1.00")
    ]
    assert api.get(BY_TAG, {"window": "400d"}).status_code == 400


# ----------------------------------------------------------------------------- earnings


def test_earnings_hold_to_the_cent_for_the_worked_example(
    api, outsider_api, tenant, outsider, price
):
    acme = prepaid_key(tenant)
    # $34.20 of client price = $20.52 of cost at $1/MTok input, settled as two requests.
    spend(acme, price, "req-acme-1", 12_000_000)
    spend(acme, price, "req-acme-2", 8_520_000)
    trace(
        acme,
        request_id="req-acme-1",
        cost_nanos=parse_usd("12"),
        client_nanos=parse_usd("20"),
        cached_input_tokens=1_000_000,
        cache_savings_nanos=parse_usd("0.90"),
        client_cache_savings_nanos=parse_usd("1.50"),
    )
    trace(
        acme, request_id="req-acme-2", cost_nanos=parse_usd("8.52"), client_nanos=parse_usd("14.2")
    )
    # A wallet-funded key that spent $3 forty days ago and was deleted since.
    old = key_create(tenant=tenant, actor=None, label="old", funding="wallet").key
    spend(old, price, "req-old", 3_000_000)
    trace(
        old,
        timezone.now() - timedelta(days=40),
        request_id="req-old",
        cost_nanos=parse_usd("3"),
        client_nanos=parse_usd("3"),
    )
    key_delete(tenant=tenant, actor=None, key_id=old.pk)
    WalletKeyFactory.create(tenant=tenant)  # no traffic, no spend: not listed
    theirs = key_create(tenant=outsider[0], actor=None, label="theirs", funding="wallet").key
    spend(theirs, price, "req-theirs", 5_000_000)
    trace(
        theirs,
        request_id="req-theirs",
        cost_nanos=parse_usd("5"),
        client_nanos=parse_usd("5"),
        cache_savings_nanos=parse_usd("7"),
        client_cache_savings_nanos=parse_usd("7"),
    )

    body = api.get(EARNINGS, {"window": "30d"}).json()

    assert body["window"] == "30d"
    shown = ("requests", "revenue", "cost", "profit", "margin_percent", "cache_savings")
    assert {k: body[k] for k in (*shown, "client_cache_savings")} == {
        "requests": 2,
        "revenue": "34.20",
        "cost": "20.52",
        "profit": "13.68",
        "margin_percent": "40.00",
        "cache_savings": "0.90",
        "client_cache_savings": "1.50",
    }
    # All time: $37.20 revenue, $23.52 cost; 13.68 / 37.20 = 36.774…%.
    assert body["all_time"] == {
        "revenue": "37.20",
        "cost": "23.52",
        "profit": "13.68",
        "margin_percent": "36.77",
    }
    assert body["by_key"] == [
        {
            "id": acme.pk,
            "label": "acme-corp-prod",
            "prefix": acme.prefix,
            "funding": "prepaid",
            "status": "active",
            "requests": 2,
            "revenue": "34.20",
            "cost": "20.52",
            "profit": "13.68",
            "margin_percent": "40.00",
            "cache_savings": "0.90",
            "client_cache_savings": "1.50",
            "all_time": {"revenue": "34.20", "cost": "20.52", "profit": "13.68"},
        },
        {
            "id": old.pk,
            "label": "old",
            "prefix": old.prefix,
            "funding": "wallet",
            "status": "deleted",
            "requests": 0,
            "revenue": "0.00",
            "cost": "0.00",
            "profit": "0.00",
            "margin_percent": None,
            "cache_savings": "0.00",
            "client_cache_savings": "0.00",
            "all_time": {"revenue": "3.00", "cost": "3.00", "profit": "0.00"},
        },
    ]
    theirs_body = outsider_api.get(EARNINGS).json()
    assert [k["id"] for k in theirs_body["by_key"]] == [theirs.pk]
    assert (theirs_body["revenue"], theirs_body["all_time"]["revenue"]) == ("5.00", "5.00")
    assert theirs_body["cache_savings"] == "7.00"


def test_earnings_margin_is_rounded_once_half_up(api, tenant, outsider):
    key = WalletKeyFactory.create(tenant=tenant)
    trace(key, cost_nanos=1, client_nanos=3)  # 66.666…%
    trace(WalletKeyFactory.create(tenant=tenant), cost_nanos=1, client_nanos=8)  # 87.5%

    body = api.get(EARNINGS, {"window": "1h"}).json()

    assert body["margin_percent"] == "81.82"  # 9 of 11
    assert [k["margin_percent"] for k in body["by_key"]] == ["87.50", "66.67"]


def test_earnings_without_traffic_have_no_margin(api, tenant, outsider):
    body = api.get(EARNINGS).json()

    assert body["window"] == "30d"
    assert (body["revenue"], body["cost"], body["profit"]) == ("0.00", "0.00", "0.00")
    assert body["margin_percent"] is None
    assert body["all_time"]["margin_percent"] is None
    assert body["by_key"] == []
    assert api.get(EARNINGS, {"window": "0d"}).status_code == 400


def test_the_reports_by_key_fast_path_is_the_serializers_json(api, tenant, outsider, price):
    wallet = WalletKeyFactory.create(tenant=tenant, label="Ünïcode <label>")
    trace(wallet, cost_nanos=1, client_nanos=3, input_tokens=7, output_tokens=2)
    trace(wallet, status=Trace.Status.UPSTREAM_ERROR, status_code=502)
    free = WalletKeyFactory.create(tenant=tenant)  # no revenue: margin null
    trace(free, cost_nanos=5, client_nanos=0, cached_input_tokens=3, cache_write_tokens=4)
    expired = WalletKeyFactory.create(tenant=tenant, expires_at=timezone.now())
    trace(expired, cost_nanos=2, client_nanos=9)
    prepaid = prepaid_key(tenant)  # spend ever, no traffic in the window
    spend(prepaid, price, "req-prepaid", 1_234_567)
    deleted = WalletKeyFactory.create(tenant=tenant)
    trace(deleted, cost_nanos=4, client_nanos=6)
    key_delete(tenant=tenant, actor=None, key_id=deleted.pk)
    trace(WalletKeyFactory.create(tenant=outsider[0]), cost_nanos=1, client_nanos=2)
    until = timezone.now() + timedelta(minutes=1)
    since = until - timedelta(days=1)

    earnings = earnings_summary(tenant=tenant, since=since, until=until)
    usage = tenant_usage(tenant=tenant, since=since, until=until)
    earnings_body = api.get(EARNINGS, {"window": "1d"}).json()
    usage_body = api.get("/api/v1/usage", {"window": "1d"}).json()

    expected_earnings = EarningsApi.OutputSerializer(earnings).data["by_key"]
    expected_usage = TenantUsageApi.OutputSerializer(usage).data["by_key"]
    assert len(expected_earnings) == 5 and len(expected_usage) == 4
    assert {k["status"] for k in expected_earnings} >= {"active", "expired", "deleted"}
    assert None in [k["margin_percent"] for k in expected_earnings]
    # Equal field for field and in the serializers' order, which the schema documents.
    for fast, slow in [
        *zip([key_earnings_json(k) for k in earnings.by_key], expected_earnings, strict=True),
        *zip([key_usage_json(k) for k in usage.by_key], expected_usage, strict=True),
    ]:
        assert fast == slow
        assert list(fast) == list(slow)
    assert earnings_body["by_key"] == expected_earnings
    assert usage_body["by_key"] == expected_usage
    fields = list(EarningsApi.OutputSerializer().fields)
    assert list(earnings_body)[-len(fields) :] == fields


# --------------------------------------------------------------- sub-account API usage


def test_sub_account_usage_is_in_cents_rounded_once_half_up(api, tenant, outsider):
    created = create_sub_account(api)
    key = ClientKey.objects.get(pk=created["id"])
    midnight = today_midnight()
    yesterday = midnight - timedelta(hours=6)
    # $12.345 = 1234.5 cents -> 1235; 0.5 cents -> 1; 0.4999999 cents -> 0.
    trace(
        key,
        midnight,
        input_tokens=1_000,
        output_tokens=20,
        cached_input_tokens=5,
        cost_nanos=12_345_000_000,
        client_nanos=12_345_000_000,
        cache_savings_nanos=9_000_000,
        client_cache_savings_nanos=15_000_000,  # 1.5 cents -> 2
    )
    trace(
        key,
        yesterday,
        input_tokens=1,
        cost_nanos=5_000_000,
        client_nanos=5_000_000,
        client_cache_savings_nanos=4_999_999,
    )
    trace(
        key,
        yesterday,
        model="mock-claude",
        output_tokens=3,
        cost_nanos=4_999_999,
        client_nanos=4_999_999,
    )
    trace(key, timezone.now() - timedelta(days=31), cost_nanos=10**9, client_nanos=10**9)
    trace(WalletKeyFactory.create(tenant=tenant), cost_nanos=10**9, client_nanos=10**9)

    response = api.get(sub_account_url(key.pk, "/usage"), {"window": "30d"})

    assert response.status_code == 200
    body = response.json()
    assert body["window"] == "30d"
    assert body["summary"] == {
        "requests": 3,
        "cost_cents": 1_235,  # 1235.4999999
        "input_tokens": 1_001,
        "output_tokens": 23,
        "cached_input_tokens": 5,
        "cache_savings_cents": 2,  # 1.9999999, rounded once
    }
    assert body["by_model"] == [
        {
            "model": "mock-gpt",
            "requests": 2,
            "cost_cents": 1_235,
            "input_tokens": 1_001,
            "output_tokens": 20,
            "cached_input_tokens": 5,
            "cache_savings_cents": 2,
        },
        {
            "model": "mock-claude",
            "requests": 1,
            "cost_cents": 0,
            "input_tokens": 0,
            "output_tokens": 3,
            "cached_input_tokens": 0,
            "cache_savings_cents": 0,
        },
    ]
    assert body["by_day"] == [
        {"date": yesterday.date().isoformat(), "requests": 2, "cost_cents": 1},  # 0.9999999
        {"date": midnight.date().isoformat(), "requests": 1, "cost_cents": 1_235},
    ]
    assert api.get(sub_account_url(key.pk, "/usage"), {"window": "2y"}).status_code == 400


def test_sub_account_usage_by_tag_covers_only_sub_accounts_in_cents(
    api, outsider_api, tenant, outsider
):
    team_a = ClientKey.objects.get(pk=create_sub_account(api, default_tag="team-a")["id"])
    untagged = ClientKey.objects.get(pk=create_sub_account(api)["id"])
    trace(team_a, input_tokens=10, output_tokens=2, cost_nanos=15_000_000, client_nanos=15_000_000)
    trace(team_a, input_tokens=5, cost_nanos=4_000_000, client_nanos=4_000_000)
    trace(untagged, output_tokens=1, cost_nanos=100_000, client_nanos=100_000)
    trace(untagged, timezone.now() - timedelta(days=8), tag="old", cost_nanos=1, client_nanos=1)
    prepaid = prepaid_key(tenant)
    trace(prepaid, tag="team-a", cost_nanos=600_000_000, client_nanos=10**9)
    theirs = ClientKey.objects.get(pk=create_sub_account(outsider_api, default_tag="team-a")["id"])
    trace(theirs, cost_nanos=10**9, client_nanos=10**9)

    body = api.get(SUB_ACCOUNT_BY_TAG, {"window": "7d"}).json()

    assert body["window"] == "7d"
    assert body["by_tag"] == [
        {
            "tag": "team-a",
            "requests": 2,
            "cost_cents": 2,
            "input_tokens": 15,
            "output_tokens": 2,
            "cached_input_tokens": 0,
            "cache_savings_cents": 0,
        },  # 1.9 cents
        {
            "tag": "",
            "requests": 1,
            "cost_cents": 0,
            "input_tokens": 0,
            "output_tokens": 1,
            "cached_input_tokens": 0,
            "cache_savings_cents": 0,
        },  # 0.01 cents
    ]
    assert outsider_api.get(SUB_ACCOUNT_BY_TAG).json()["by_tag"] == [
        {
            "tag": "team-a",
            "requests": 1,
            "cost_cents": 100,
            "input_tokens": 0,
            "output_tokens": 0,
            "cached_input_tokens": 0,
            "cache_savings_cents": 0,
        }
    ]

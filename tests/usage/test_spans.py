"""The span and time zone of every report (``usage.windows.request_span``): ``?window=``,
``?since=&until=`` (times or local dates), ``?tz=``, and what the answer states."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from tests.keys.factories import WalletKeyFactory
from tests.usage.conftest import BY_TAG, EARNINGS, SUB_ACCOUNT_BY_TAG, trace, usage_url
from usage.windows import (
    MomentInvalid,
    MonthInvalid,
    Window,
    moment_parse,
    month_parse,
    month_span,
    months_since,
    window_span,
)

pytestmark = pytest.mark.usefixtures("books_balance", "api_throttle_reset")

TENANT_USAGE = "/api/v1/usage"
REPORTS = [usage_url, lambda _: TENANT_USAGE, lambda _: BY_TAG, lambda _: EARNINGS]


@pytest.fixture
def key(tenant):
    return WalletKeyFactory.create(tenant=tenant)


@pytest.mark.parametrize(
    ("query", "field", "message"),
    [
        ({"tz": "Mars/Olympus"}, "tz", "Unknown time zone"),
        ({"tz": ""}, "tz", "May not be blank"),
        ({"since": "yesterday"}, "since", "ISO 8601"),
        ({"since": "2026-02-30"}, "since", "ISO 8601"),
        ({"since": "2026-01-01T25:00"}, "since", "ISO 8601"),
        ({"since": "0001-01-01"}, "since", "year from 1970"),
        ({"until": "2026-01-01"}, "since", "Required with until"),
        ({"since": "2026-02-01", "until": "2026-01-01"}, "since", "earlier than until"),
        ({"since": "2026-01-01", "until": "2026-01-01"}, "since", "earlier than until"),
        ({"since": "2999-01-01"}, "since", "in the past"),
        ({"since": "2010-01-01", "until": "2026-01-01"}, "since", "10 years"),
        ({"window": "7d", "since": "2026-01-01"}, "window", "not both"),
        ({"window": "7d", "until": "2026-01-01"}, "window", "not both"),
    ],
)
@pytest.mark.parametrize("report", range(len(REPORTS)))
def test_a_bad_span_or_zone_is_a_400_naming_it(
    api, tenant, outsider, key, report, query, field, message
):
    response = api.get(REPORTS[report](key.pk), query)

    assert response.status_code == 400, response.content
    assert message in " ".join(response.json()[field])


def test_a_range_of_local_dates_reads_in_the_zone_and_says_so(api, tenant, outsider, key):
    # 2026-03-01 in Kolkata runs from 2026-02-28 18:30 to 2026-03-01 18:30 UTC.
    trace(key, datetime(2026, 2, 28, 18, 29, tzinfo=UTC), client_nanos=1)
    trace(key, datetime(2026, 2, 28, 18, 30, tzinfo=UTC), client_nanos=20)
    trace(key, datetime(2026, 3, 1, 18, 29, tzinfo=UTC), client_nanos=300)
    trace(key, datetime(2026, 3, 1, 18, 30, tzinfo=UTC), client_nanos=4000)

    answer = api.get(
        usage_url(key.pk), {"since": "2026-03-01", "until": "2026-03-02", "tz": "Asia/Kolkata"}
    ).json()

    assert (answer["window"], answer["since"], answer["until"], answer["timezone"]) == (
        None,
        "2026-03-01T00:00:00+05:30",
        "2026-03-02T00:00:00+05:30",
        "Asia/Kolkata",
    )
    assert answer["summary"]["requests"] == 2
    assert answer["summary"]["client_price"] == "0.00000032"
    assert [d["date"] for d in answer["by_day"]] == ["2026-03-01"]


def test_days_follow_the_accounts_zone_unless_tz_overrides_it(api, tenant, outsider, key):
    tenant.timezone = "America/St_Johns"
    tenant.save(update_fields=["timezone"])
    # 01:00 UTC on 2 March is 21:30 on 1 March in St. John's (-3:30).
    trace(key, datetime(2026, 3, 2, 1, tzinfo=UTC))
    span = {"since": "2026-03-01T00:00:00Z", "until": "2026-03-03T00:00:00Z"}

    local = api.get(usage_url(key.pk), span).json()
    in_utc = api.get(usage_url(key.pk), {**span, "tz": "UTC"}).json()

    assert local["timezone"] == "America/St_Johns"
    assert local["since"] == "2026-02-28T20:30:00-03:30"
    assert [d["date"] for d in local["by_day"]] == ["2026-03-01"]
    assert in_utc["timezone"] == "UTC"
    assert in_utc["since"] == "2026-03-01T00:00:00Z"
    assert [d["date"] for d in in_utc["by_day"]] == ["2026-03-02"]


def test_a_time_without_offset_is_local_and_until_defaults_to_now(api, tenant, outsider, key):
    trace(key, datetime.now(tz=UTC) - timedelta(minutes=1))
    answer = api.get(TENANT_USAGE, {"since": "2026-01-01T09:00", "tz": "Europe/London"}).json()

    assert answer["since"] == "2026-01-01T09:00:00Z"  # London is on GMT in January
    assert answer["timezone"] == "Europe/London"
    assert answer["summary"]["requests"] == 1


def test_a_window_states_its_zone(api, tenant, outsider, key):
    for url in (usage_url(key.pk), TENANT_USAGE, BY_TAG, EARNINGS, SUB_ACCOUNT_BY_TAG):
        answer = api.get(url, {"window": "24h", "tz": "Asia/Kathmandu"}).json()
        assert (answer["window"], answer["timezone"]) == ("24h", "Asia/Kathmandu"), url
        assert answer["since"].endswith("+05:45"), url


def test_the_tenant_wide_report_breaks_down_by_key_model_day_and_tag(api, tenant, outsider, key):
    other = WalletKeyFactory.create(tenant=tenant, label="second")
    theirs = WalletKeyFactory.create(tenant=outsider[0])
    at = datetime(2026, 5, 10, 12, tzinfo=UTC)
    trace(key, at, model="m1", tag="a", client_nanos=10**9, cost_nanos=4 * 10**8)
    trace(other, at + timedelta(days=1), model="m2", tag="", client_nanos=3 * 10**9)
    trace(theirs, at, client_nanos=10**12)

    answer = api.get(TENANT_USAGE, {"since": "2026-05-01", "until": "2026-06-01"}).json()

    assert answer["summary"]["requests"] == 2
    assert answer["summary"]["client_price"] == "4.00"
    assert answer["summary"]["profit"] == "3.60"
    assert [(k["id"], k["label"], k["prefix"], k["client_price"]) for k in answer["by_key"]] == [
        (other.pk, "second", other.prefix, "3.00"),
        (key.pk, key.label, key.prefix, "1.00"),
    ]
    assert [m["model"] for m in answer["by_model"]] == ["m2", "m1"]
    assert [(d["date"], d["requests"]) for d in answer["by_day"]] == [
        ("2026-05-10", 1),
        ("2026-05-11", 1),
    ]
    assert [(t["tag"], t["client_price"]) for t in answer["by_tag"]] == [
        ("", "3.00"),
        ("a", "1.00"),
    ]


def test_earnings_by_month_in_the_zone(api, tenant, outsider, key):
    # 23:00 UTC on 31 January is 1 February in Lord Howe (+11 in summer).
    trace(key, datetime(2026, 1, 31, 23, tzinfo=UTC), client_nanos=3 * 10**9, cost_nanos=10**9)
    trace(key, datetime(2026, 1, 15, tzinfo=UTC), client_nanos=10**9, cost_nanos=10**9)

    answer = api.get(
        EARNINGS, {"since": "2025-12-01", "until": "2026-03-01", "tz": "Australia/Lord_Howe"}
    ).json()

    assert answer["by_month"] == [
        {
            "month": "2026-01-01",
            "requests": 1,
            "revenue": "1.00",
            "cost": "1.00",
            "profit": "0.00",
            "margin_percent": "0.00",
        },
        {
            "month": "2026-02-01",
            "requests": 1,
            "revenue": "3.00",
            "cost": "1.00",
            "profit": "2.00",
            "margin_percent": "66.67",
        },
    ]


# ------------------------------------------- the same rules without a query (the dashboard)

KOLKATA = ZoneInfo("Asia/Kolkata")


def test_a_month_is_its_local_midnights_and_a_window_ends_now():
    month = month_span(year=2025, month=3, zone=KOLKATA)
    assert (month.since.isoformat(), month.until.isoformat()) == (
        "2025-03-01T00:00:00+05:30",
        "2025-04-01T00:00:00+05:30",
    )
    assert month.label is None and month.zone is KOLKATA
    now = datetime(2025, 3, 10, 12, tzinfo=UTC)
    window = window_span(Window(label="7d", length=timedelta(days=7)), zone=KOLKATA, now=now)
    assert (window.label, window.until, window.until - window.since) == ("7d", now, timedelta(7))
    assert window.until.utcoffset() == timedelta(hours=5, minutes=30)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("2025-13", "Give a month as YYYY-MM"),
        ("2025-3", "Give a month as YYYY-MM"),
        ("1999-12", "from 2000-01"),
        ("2025-04", "2025-04 has not begun yet (time zone Asia/Kolkata)"),
    ],
)
def test_a_month_that_cannot_have_a_statement_says_why(text, message):
    # 31 March 17:00 UTC is 22:30 in Kolkata: April begins there at 18:30 UTC.
    now = datetime(2025, 3, 31, 17, tzinfo=UTC)
    with pytest.raises(MonthInvalid, match=re.escape(message)):
        month_parse(text, zone=KOLKATA, now=now)
    assert month_parse("2025-04", zone=KOLKATA, now=now + timedelta(hours=2)) == (2025, 4)


def test_a_keys_months_run_from_its_creation_to_now_in_the_zone():
    created = datetime(2024, 11, 30, 19, tzinfo=UTC)  # 1 December in Kolkata
    now = datetime(2025, 2, 3, tzinfo=UTC)
    assert [f"{m:%Y-%m}" for m in months_since(created, zone=KOLKATA, now=now)] == [
        "2025-02",
        "2025-01",
        "2024-12",
    ]
    assert [f"{m:%Y-%m}" for m in months_since(created, zone=ZoneInfo("UTC"), now=now)] == [
        "2025-02",
        "2025-01",
        "2024-12",
        "2024-11",
    ]


@pytest.mark.parametrize(
    ("text", "code"),
    [("yesterday", "invalid"), ("2026-02-30", "invalid"), ("0001-01-01", "year")],
)
def test_a_moment_that_cannot_be_read_says_which_rule(text, code):
    with pytest.raises(MomentInvalid) as refused:
        moment_parse(text)
    assert refused.value.code == code

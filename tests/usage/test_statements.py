"""A key's monthly statement (``GET /api/v1/keys/{id}/statements/YYYY-MM``): months and days
of the reseller's time zone, client prices only, the same after the traces are purged."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from django.utils import timezone

from tests.keys.factories import WalletKeyFactory
from tests.usage.conftest import KEYS, trace
from tests.usage.test_exports import table
from usage.models import Trace
from usage.services import traces_purge, usage_roll_up

pytestmark = pytest.mark.usefixtures("books_balance", "api_throttle_reset")

USD = 10**9
KOLKATA = ZoneInfo("Asia/Kolkata")  # +05:30: local midnight is 18:30 UTC the day before


def statement_url(key_id: int, month: str) -> str:
    return f"{KEYS}/{key_id}/statements/{month}"


def local(year: int, month: int, day: int, hour: int, minute: int) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=KOLKATA)


@pytest.fixture
def kolkata_key(tenant):
    tenant.name = "Acme Resale"
    tenant.support_email = "help@acme.example"
    tenant.timezone = "Asia/Kolkata"
    tenant.save()
    key = WalletKeyFactory.create(tenant=tenant, label="client-one")
    # Just before the month (local), at its first and last local minutes, just after it.
    trace(key, local(2025, 2, 28, 23, 59), client_nanos=100 * USD)
    trace(key, local(2025, 3, 1, 0, 0), model="mock-gpt", input_tokens=10, client_nanos=USD)
    trace(
        key,
        local(2025, 3, 1, 0, 1),
        model="mock-claude",
        output_tokens=5,
        cached_input_tokens=3,
        cost_nanos=USD,
        client_nanos=2 * USD,
        cache_savings_nanos=USD // 4,
        client_cache_savings_nanos=USD // 2,
        status=Trace.Status.REFUSED,
        status_code=402,
    )
    trace(key, local(2025, 3, 31, 23, 59), model="mock-gpt", client_nanos=4 * USD)
    trace(key, local(2025, 4, 1, 0, 0), client_nanos=100 * USD)
    return key


def test_a_statement_covers_the_local_month_in_client_prices_only(
    api, tenant, outsider, kolkata_key
):
    response = api.get(statement_url(kolkata_key.pk, "2025-03"))

    assert response.status_code == 200, response.content
    shown = response.json()
    assert shown == {
        "reseller": {"display_name": "Acme Resale", "support_email": "help@acme.example"},
        "key": {"id": kolkata_key.pk, "label": "client-one", "prefix": kolkata_key.prefix},
        "period": {
            "month": "2025-03",
            "start": "2025-03-01",
            "end": "2025-04-01",
            "timezone": "Asia/Kolkata",
            "since": "2025-02-28T18:30:00Z",
            "until": "2025-03-31T18:30:00Z",
        },
        "currency": "USD",
        "totals": {
            "requests": 3,
            "input_tokens": 10,
            "output_tokens": 5,
            "cached_input_tokens": 3,
            "client_price": "7.00",
            "cache_savings": "0.50",
        },
        "by_model": [
            {
                "model": "mock-gpt",
                "requests": 2,
                "input_tokens": 10,
                "output_tokens": 0,
                "cached_input_tokens": 0,
                "client_price": "5.00",
                "cache_savings": "0.00",
            },
            {
                "model": "mock-claude",
                "requests": 1,
                "input_tokens": 0,
                "output_tokens": 5,
                "cached_input_tokens": 3,
                "client_price": "2.00",
                "cache_savings": "0.50",
            },
        ],
        # Local days: the first two requests are on 28 February in UTC.
        "by_day": [
            {"date": "2025-03-01", "requests": 2, "client_price": "3.00"},
            {"date": "2025-03-31", "requests": 1, "client_price": "4.00"},
        ],
    }
    assert "cost" not in response.content.decode().replace("cost_", "")
    assert "profit" not in response.content.decode()


def test_a_statement_in_csv(api, tenant, outsider, kolkata_key):
    response = api.get(statement_url(kolkata_key.pk, "2025-03"), {"format": "csv"})
    rows = table(response)

    assert (
        f'filename="statement-{kolkata_key.prefix}-2025-03.csv"' in response["Content-Disposition"]
    )
    assert list(rows[0]) == [
        "section",
        "date",
        "model",
        "requests",
        "input_tokens",
        "output_tokens",
        "cached_input_tokens",
        "client_price",
        "cache_savings",
    ]
    assert [(r["section"], r["date"], r["model"], r["client_price"]) for r in rows] == [
        ("total", "", "", "7.00"),
        ("model", "", "mock-gpt", "5.00"),
        ("model", "", "mock-claude", "2.00"),
        ("day", "2025-03-01", "", "3.00"),
        ("day", "2025-03-31", "", "4.00"),
    ]


def test_a_statement_is_the_same_after_its_traces_are_purged(api, tenant, outsider, kolkata_key):
    before = api.get(statement_url(kolkata_key.pk, "2025-03")).json()

    usage_roll_up()
    assert traces_purge(now=timezone.now() + timedelta(days=3650)) == 5
    assert not Trace.objects.exists()

    assert api.get(statement_url(kolkata_key.pk, "2025-03")).json() == before


def test_utc_and_dst_months(api, tenant, outsider):
    key = WalletKeyFactory.create(tenant=tenant)
    trace(key, datetime(2025, 3, 31, 23, 59, tzinfo=UTC), client_nanos=USD)
    utc = api.get(statement_url(key.pk, "2025-03")).json()
    tenant.timezone = "America/New_York"  # DST from 9 March: the month ends at 04:00 UTC
    tenant.save()
    new_york = api.get(statement_url(key.pk, "2025-03")).json()
    april = api.get(statement_url(key.pk, "2025-04")).json()

    assert (utc["period"]["since"], utc["totals"]["requests"]) == ("2025-03-01T00:00:00Z", 1)
    assert (new_york["period"]["since"], new_york["period"]["until"]) == (
        "2025-03-01T05:00:00Z",
        "2025-04-01T04:00:00Z",
    )
    assert new_york["by_day"] == [{"date": "2025-03-31", "requests": 1, "client_price": "1.00"}]
    assert april["totals"]["requests"] == 0 and april["by_day"] == []


@pytest.mark.parametrize(
    "month", ["2025-3", "2025-13", "2025-00", "1999-12", "march", "2025-03-01"]
)
def test_a_malformed_month_is_a_400(api, tenant, outsider, month):
    key = WalletKeyFactory.create(tenant=tenant)

    response = api.get(statement_url(key.pk, month))

    assert response.status_code == 400
    assert response.json() == {"month": ["Give a month as YYYY-MM, from 2000-01 (e.g. 2025-01)."]}


def test_the_current_month_answers_and_a_later_one_is_a_400(api, tenant, outsider):
    key = WalletKeyFactory.create(tenant=tenant)
    trace(key, client_nanos=USD)
    now = timezone.now()
    this_month = f"{now:%Y-%m}"
    next_month = f"{(now.replace(day=1) + timedelta(days=32)):%Y-%m}"

    current = api.get(statement_url(key.pk, this_month))
    later = api.get(statement_url(key.pk, next_month))

    assert (current.status_code, current.json()["totals"]["client_price"]) == (200, "1.00")
    assert later.status_code == 400
    assert later.json() == {"month": [f"{next_month} has not begun yet (time zone UTC)."]}


def test_another_tenants_key_is_404(api, outsider_api, tenant, outsider):
    key = WalletKeyFactory.create(tenant=tenant)

    for client in (outsider_api,):
        response = client.get(statement_url(key.pk, "2025-03"), {"format": "csv"})
        assert response.status_code == 404
        assert response.json() == {"detail": "Not found.", "code": "not_found"}
    assert api.get(statement_url(999_999, "2025-03")).status_code == 404

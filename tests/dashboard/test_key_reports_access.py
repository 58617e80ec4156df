"""Who reaches a key's reports in the dashboard and at what price: the signed-in tenant's
own keys only (another tenant's key id is a 404, CSV included), an htmx request gets the
fragment alone, and the number of queries does not grow with the traces or the keys."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from accounts.models import Tenant
from keys.models import ClientKey
from keys.services import key_delete
from tests.dashboard.key_reports import page_url, signed_in
from tests.dashboard.pages import parse
from tests.dashboard.traffic import served
from tests.keys.apis.conftest import prepaid_key
from tests.keys.factories import WalletKeyFactory
from tests.usage.factories import TraceFactory
from tests.usage.test_exports import body

pytestmark = pytest.mark.usefixtures("books_balance")


@pytest.fixture
def browser(tenant: Tenant) -> Client:
    return signed_in(tenant)


MONTH = f"{timezone.now():%Y-%m}"
REPORTS = ["usage", "requests", f"statements/{MONTH}", "statements"]


def every_url(key_id: int) -> list[str]:
    urls = []
    for report in REPORTS:
        urls += [page_url(key_id, report), page_url(key_id, report) + "?format=csv"]
    urls += [
        page_url(key_id, "usage") + "?month=2025-01",
        page_url(key_id, "requests") + "?model=mock-gpt&format=csv",
        page_url(key_id, "statements") + "2025-01/?format=csv",
        page_url(key_id, "statements") + "?month=2025-01",
    ]
    return urls


def test_another_tenants_key_is_not_found_at_every_url(browser, outsider, price):
    theirs = prepaid_key(outsider[0], label="theirs")
    served(theirs, price, request_id="req-theirs", at=timezone.now(), input_tokens=1000)
    spent = ClientKey.objects.get(pk=theirs.pk).client_spent_nanos

    for url in every_url(theirs.pk):
        response = browser.get(url)
        assert response.status_code == 404, url
        assert b"req-theirs" not in response.content
        assert not response.streaming, url
    for url in every_url(999_999):
        assert browser.get(url).status_code == 404, url
    assert ClientKey.objects.get(pk=theirs.pk).client_spent_nanos == spent


def test_the_reports_are_only_for_signed_in_resellers(tenant, outsider):
    key = WalletKeyFactory.create(tenant=tenant)
    for url in every_url(key.pk):
        response = Client().get(url)
        assert response.status_code == 302, url
        assert response["Location"].startswith("/dashboard/sign-in/?next=")
    # Outsiders signed in see their own keys only.
    assert signed_in(outsider[0]).get(page_url(key.pk, "usage")).status_code == 404


def test_the_reports_only_answer_get(browser, tenant):
    key = WalletKeyFactory.create(tenant=tenant)
    for report in ("usage", "requests", f"statements/{MONTH}"):
        assert browser.post(page_url(key.pk, report)).status_code == 405


def test_a_deleted_keys_reports_stay_readable(browser, tenant, price):
    key = prepaid_key(tenant)
    served(key, price, request_id="req-before", at=timezone.now(), input_tokens=1000)
    key_delete(tenant=tenant, actor=None, key_id=key.pk)

    page = parse(browser.get(page_url(key.pk, "requests")).content)
    assert len(page.by_id("key-requests-table").find_all("tbody")[0].find_all("tr")) == 1
    assert browser.get(page_url(key.pk, "usage")).status_code == 200
    assert browser.get(page_url(key.pk, f"statements/{MONTH}")).status_code == 200


@pytest.mark.parametrize(
    ("report", "root"),
    [
        ("usage", '<section id="key-usage"'),
        ("requests", '<section id="key-requests"'),
        (f"statements/{MONTH}", '<div id="key-statement"'),
    ],
)
def test_an_htmx_request_gets_only_the_fragment(browser, tenant, report, root):
    key = WalletKeyFactory.create(tenant=tenant)
    TraceFactory.create(client_key=key)

    whole = browser.get(page_url(key.pk, report))
    fragment = browser.get(page_url(key.pk, report), headers={"HX-Request": "true"})

    assert whole.status_code == fragment.status_code == 200
    html = fragment.content.decode()
    assert html.strip().startswith(root)
    assert "<html" not in html and '<nav class="report-tabs"' not in html
    assert "<html" in whole.content.decode() and root in whole.content.decode()
    assert "HX-Request" in whole["Vary"] and "HX-Request" in fragment["Vary"]
    # On its own page the fragment's links put their address in the bar; embedded in the
    # key page, they swap the fragment only.
    alone = browser.get(
        page_url(key.pk, report),
        headers={
            "HX-Request": "true",
            "HX-Current-URL": f"http://testserver{page_url(key.pk, report)}",
        },
    )
    embedded = browser.get(
        page_url(key.pk, report),
        headers={
            "HX-Request": "true",
            "HX-Current-URL": f"http://testserver/dashboard/keys/{key.pk}/",
        },
    )
    assert 'hx-push-url="true"' in alone.content.decode()
    assert 'hx-push-url="true"' not in embedded.content.decode()
    assert 'hx-target="this"' in embedded.content.decode()


def traffic(tenant: Tenant, *, keys: int, traces_per_key: int) -> ClientKey:
    """``keys`` keys of ``tenant`` with traffic over the last days; the first one's returned."""
    made = [WalletKeyFactory.create(tenant=tenant) for _ in range(keys)]
    now = timezone.now()
    for key in made:
        for n in range(traces_per_key):
            TraceFactory.create(
                client_key=key,
                created_at=now - timedelta(hours=7 * n + 1),
                model=f"model-{n % 4}",
                tag=f"tag-{n % 3}",
                cost_nanos=1_000 * n,
                client_nanos=1_700 * n,
            )
    return made[0]


def queries(browser: Client, url: str) -> int:
    with CaptureQueriesContext(connection) as captured:
        response = browser.get(url)
        assert response.status_code == 200, url
        body(response)  # a streamed CSV's pages are read as it is sent
    return len(captured)


def test_queries_do_not_grow_with_the_traces_or_the_keys(browser, tenant, make_reseller):
    small = traffic(tenant, keys=3, traces_per_key=3)
    other, _ = make_reseller(email="big@example.com")
    big_client = signed_in(other)
    big = traffic(other, keys=30, traces_per_key=60)

    counted = {}
    for report in (
        "usage",
        "usage?window=90d",
        "usage?format=csv",
        "requests",
        "requests?tag=tag-1&page=2",
        "requests?format=csv",
        f"statements/{MONTH}",
        f"statements/{MONTH}?format=csv",
    ):
        path, _, query = report.partition("?")
        url = page_url(small.pk, path) + (f"?{query}" if query else "")
        few = queries(browser, url)
        many = queries(big_client, url.replace(f"/{small.pk}/", f"/{big.pk}/"))
        assert few == many, (report, few, many)
        counted[report] = many
    print(counted)

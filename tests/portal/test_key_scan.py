"""No response of a key's pages carries the reseller's side of the key.

Every URL the key's pages serve (the client's list of keys, the page, its alerts, each report as a page and as the htmx fragment,
every window, month, filter and page, every CSV, the 400 pages) is fetched for the worked
example's key ($34.20 spent of $100 at a cost of $60) and scanned:

* for the reseller's amounts (cost $20.52, profit $13.68, cost funded $60.00, ... as a page,
  a CSV or a nano-dollar count would write them) and its ratio and margin;
* for the words cost, profit, margin and ratio in anything a person reads (text, the
  titles and labels of elements, the chart data) and in any JSON key or CSV column.
"""

from __future__ import annotations

import csv
import io
import json
from typing import Any

import pytest
from django.utils import timezone

from accounts.models import Tenant
from billing.models import ModelPrice
from portal.key_forms import Cursor
from tests.dashboard.pages import Node, parse
from tests.portal.conftest import bound, portal_session
from tests.portal.key_traffic import (
    CLIENT_LEFT,
    CLIENT_SPENT,
    RESELLER_WORDS,
    Traffic,
    acme,
    reseller_figures,
    worked_example,
)
from tests.usage.test_exports import body

pytestmark = pytest.mark.usefixtures("books_balance")

# What a person reads of an element besides its text.
READ_ATTRIBUTES = ("title", "aria-label", "alt", "placeholder", "value", "content", "label")


def urls(traffic: Traffic) -> list[tuple[str, dict[str, str]]]:
    """Every portal URL of the key, with the headers to send (htmx's for the fragments)."""
    key = traffic.key
    base = f"/portal/keys/{key.pk}"
    month = f"{timezone.now().astimezone(key.tenant.zone):%Y-%m}"
    oldest = key.traces.order_by("created_at", "id").first()
    assert oldest is not None
    cursor = str(Cursor(at=oldest.created_at, trace_id=oldest.pk))
    htmx = {"HX-Request": "true"}
    embedded = {**htmx, "HX-Current-URL": f"http://testserver{base}/"}
    pages = [
        "/portal/",
        f"{base}/",
        f"{base}/alerts/",
        f"{base}/unbind/",
        f"{base}/usage/",
        f"{base}/usage/?window=7d",
        f"{base}/usage/?window=90d",
        f"{base}/usage/?month={month}",
        f"{base}/usage/?window=13d",
        f"{base}/requests/",
        f"{base}/requests/?status=ok",
        f"{base}/requests/?status=error",
        f"{base}/requests/?model=mock-gpt",
        f"{base}/requests/?status=bogus",
        f"{base}/requests/?before={cursor}",
        f"{base}/requests/?after={cursor}",
        f"{base}/statements/{month}/",
        f"{base}/statements/2024-01/",
    ]
    fragments = [u for u in pages if "/usage/" in u or "/requests/" in u or "/statements/" in u]
    csvs = [
        f"{base}/usage/?format=csv",
        f"{base}/usage/?window=7d&format=csv",
        f"{base}/usage/?month={month}&format=csv",
        f"{base}/requests/?format=csv",
        f"{base}/requests/?status=ok&format=csv",
        f"{base}/statements/{month}/?format=csv",
    ]
    return [
        *((u, {}) for u in pages),
        *((u, htmx) for u in fragments),
        *((u, embedded) for u in fragments),
        *((u, {}) for u in csvs),
    ]


def read_text(page: Node) -> list[str]:
    """What a person reads: every text node outside scripts and styles, and the readable
    attributes of every element."""
    parts: list[str] = []

    def visit(node: Node) -> None:
        if node.tag in ("script", "style"):
            return
        parts.extend(node.attrs[name] for name in READ_ATTRIBUTES if name in node.attrs)
        for child in node.children:
            if isinstance(child, str):
                parts.append(child)
            else:
                visit(child)

    visit(page)
    return parts


def json_keys(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [*value, *(k for v in value.values() for k in json_keys(v))]
    if isinstance(value, list):
        return [k for v in value for k in json_keys(v)]
    return []


def scanned(url: str, response: Any) -> str:
    """Check one answer; returns its text (CSV or HTML) for the caller's own checks."""
    text = body(response)
    found = reseller_figures().search(text)
    assert found is None, (
        f"{url} shows {found.group(0)!r}: {text[max(found.start() - 80, 0) : found.end() + 80]!r}"
    )
    if response["Content-Type"].startswith("text/csv"):
        rows = list(csv.reader(io.StringIO(text, newline="")))
        for cell in (cell for row in rows for cell in row):
            assert not RESELLER_WORDS.search(cell), (url, cell)
        return text
    page = parse(text)
    for part in read_text(page):
        assert not RESELLER_WORDS.search(part), (url, part)
    for data in page.find_all(cls="chart-data"):
        for name in json_keys(json.loads(data.text)):
            assert not RESELLER_WORDS.search(name), (url, name)
    return text


@pytest.fixture
def traffic(tenant: Tenant, price: ModelPrice) -> Traffic:
    return worked_example(acme(tenant), price)


def test_no_portal_response_shows_the_resellers_cost_profit_ratio_or_margin(traffic):
    browser, client = portal_session("ann@example.com")
    bound(client, traffic.key)
    seen = []
    for url, headers in urls(traffic):
        response = browser.get(url, headers=headers)
        assert response.status_code in (200, 400), (url, response.status_code)
        seen.append(scanned(url, response))
    everything = "\n".join(seen)
    # the scan looked at the figures the client should see
    assert f"${CLIENT_SPENT}" in everything and f"${CLIENT_LEFT}" in everything
    assert "34.20" in everything  # the CSVs' form
    assert "chart-data" in everything


def test_the_scan_finds_what_it_looks_for():
    """The patterns catch the reseller's figures in every form, and leave the client's."""
    figures = reseller_figures()
    for leak in (
        "$20.52",
        "20.52",
        "20.520000000",
        "20520000000",
        "$13.68",
        "13680000000",
        "$60.00",
        "0.600000",
        "40 %",
        "40.00 %",
        "ratio 0.6,",
    ):
        assert figures.search(leak), leak
    for fine in ("$34.20", "$65.80", "$120.52", "20.5", "1,013.68", "$100.00", "$160.00", "0.87"):
        assert not figures.search(fine), fine
    for word in ("Cost", "profit", "Margin", "ratio", "costs"):
        assert RESELLER_WORDS.search(word)
    for fine_word in ("Costume", "spent", "Caching saved you"):
        assert not RESELLER_WORDS.search(fine_word)

"""A bound key's figures as its client sees them: client prices, the reseller's name."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import fields
from decimal import Decimal

import pytest

from accounts.models import Tenant
from accounts.services import IssuedToken
from billing.money import parse_usd
from keys.models import ClientKey
from keys.services import key_create
from portal.figures import ClientKeyFigures, client_key_figures

pytestmark = pytest.mark.django_db


def test_a_prepaid_key_shows_its_client_budget_and_not_its_cost(
    make_reseller: Callable[..., tuple[Tenant, IssuedToken]],
) -> None:
    tenant, _ = make_reseller(email="acme@example.com", balance="500")
    tenant.name = "Acme AI"
    tenant.support_email = "help@acme.example"
    tenant.save()
    key = key_create(
        tenant=tenant,
        actor=None,
        label="Client A",
        client_budget_nanos=parse_usd(Decimal("100")),
        your_cost_nanos=parse_usd(Decimal("60")),
    ).key
    ClientKey.objects.filter(pk=key.pk).update(client_spent_nanos=parse_usd("34.20"))
    key = ClientKey.objects.select_related("tenant").get(pk=key.pk)
    (shown,) = client_key_figures(keys=[key])
    assert shown.budget_nanos == parse_usd("100")
    assert shown.spent_nanos == parse_usd("34.20")
    assert shown.remaining_nanos == parse_usd("65.80")
    assert shown.used_percent == 34
    assert shown.reseller_name == "Acme AI"
    assert shown.support_email == "help@acme.example"
    # Nothing of the reseller's side is carried at all.
    names = [f.name for f in fields(ClientKeyFigures)]
    assert not [n for n in names if n.startswith(("cost", "profit", "margin", "ratio"))]


@pytest.mark.parametrize(
    ("days", "text"),
    [
        (None, None),
        (0, "Less than a day"),
        (1, "About 1 day"),
        (13, "About 13 days"),
        (365, "About 365 days"),
        (366, "More than a year"),
        (76_705, "More than a year"),
    ],
)
def test_a_runway_reads_as_a_person_says_it(days: int | None, text: str | None) -> None:
    shown = ClientKeyFigures(
        key=ClientKey(),
        status="active",
        reseller_name="Acme AI",
        support_email="",
        budget_nanos=None,
        spent_nanos=0,
        total_spent_nanos=0,
        reserved_nanos=0,
        remaining_nanos=None,
        used_percent=None,
        window_spent_nanos=0,
        runway_days=days,
    )
    assert shown.runway_text == text

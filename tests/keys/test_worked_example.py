"""PRODUCT.md section 3's worked example, to the cent, through the services."""

from __future__ import annotations

import pytest

from billing.money import Usage, parse_usd
from billing.selectors import wallet_for_tenant
from billing.services import wallet_credit
from keys.models import ClientKey
from keys.services import key_create, key_delete, key_top_up
from tests.metering import reserve, settle

pytestmark = pytest.mark.usefixtures("books_balance")


def test_worked_example_holds_to_the_cent(tenant, price):
    wallet_credit(tenant=tenant, amount_nanos=parse_usd("200"), reason="opening credit")
    issued = key_create(
        tenant=tenant,
        actor=None,
        label="acme-corp-prod",
        client_budget_nanos=parse_usd("100"),
        your_cost_nanos=parse_usd("60"),
    )
    assert wallet_for_tenant(tenant=tenant).balance_nanos == parse_usd("140")

    # $20.52 of cost at $1/MTok input is 20,520,000 input tokens = $34.20 in client price.
    held = reserve(
        key=issued.key, price=price, request_id="req-1", worst_case=Usage(input_tokens=20_520_000)
    )
    settled = settle(key=issued.key, hold=held, price=price, usage=Usage(input_tokens=20_520_000))
    assert settled is not None
    assert settled.charged_client_nanos == parse_usd("34.20")
    key = ClientKey.objects.get(pk=issued.key.pk)
    assert key.client_spent_nanos == parse_usd("34.20")
    assert key.client_budget_nanos - key.client_spent_nanos == parse_usd("65.80")
    assert key.cost_spent_nanos == parse_usd("20.52")
    assert key.profit_nanos == parse_usd("13.68")

    key_top_up(tenant=tenant, actor=None, key_id=key.pk, client_amount_nanos=parse_usd("50"))
    assert wallet_for_tenant(tenant=tenant).balance_nanos == parse_usd("110")
    key.refresh_from_db()
    assert key.client_budget_nanos == parse_usd("150")

    deleted = key_delete(tenant=tenant, actor=None, key_id=key.pk)
    assert deleted.refunded_nanos == parse_usd("69.48")
    assert wallet_for_tenant(tenant=tenant).balance_nanos == parse_usd("179.48")

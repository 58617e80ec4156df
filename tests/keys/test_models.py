"""What billing's metering assumes of a key row, which it reads and writes in SQL without
importing keys."""

from __future__ import annotations

from billing import metering
from billing.models import KeyFunding
from billing.periods import BudgetPeriod
from keys.models import ClientKey


def test_metering_names_the_key_statuses_it_acts_on_as_the_model_stores_them():
    assert metering.KEY_ACTIVE == ClientKey.Status.ACTIVE
    assert metering.KEY_DELETED == ClientKey.Status.DELETED


def test_a_keys_funding_and_budget_period_choices_are_billings():
    choices = {field.name: field.choices for field in ClientKey._meta.fields}
    assert choices["funding"] == KeyFunding.choices
    assert choices["budget_period"] == BudgetPeriod.choices

"""What every write of the REST API and the sub-account API takes: its own fields, each in
its own JSON type, money as a plain decimal string; anything else is a 400 naming the field,
and nothing is written.

One table of the write endpoints (``WRITES``) drives every test, so an endpoint added
without ``config.serializers.StrictInputSerializer`` or ``billing.serializers.UsdField``
fails here.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from rest_framework.test import APIClient

from accounts.models import Tenant
from billing.models import LedgerEntry
from billing.money import parse_usd
from billing.selectors import wallet_for_tenant
from billing.services import wallet_credit
from keys.models import ClientKey
from keys.services import key_create

pytestmark = pytest.mark.usefixtures("books_balance", "api_throttle_reset")


def prepaid_key(tenant: Tenant) -> ClientKey:
    return key_create(
        tenant=tenant,
        actor=None,
        label="acme-corp-prod",
        client_budget_nanos=parse_usd("100"),
        your_cost_nanos=parse_usd("60"),
    ).key


def sub_account(tenant: Tenant) -> ClientKey:
    return key_create(
        tenant=tenant,
        actor=None,
        label="team-a",
        funding=ClientKey.Funding.WALLET,
        spend_cap_nanos=parse_usd("10"),
    ).key


@dataclass(frozen=True)
class Write:
    """One write endpoint: how to reach it and a body it accepts."""

    method: str
    url: Callable[[ClientKey | None], str]
    valid: dict[str, Any]
    target: Callable[[Tenant], ClientKey] | None = None

    def send(self, api: APIClient, tenant: Tenant, body: Any) -> Any:
        key = self.target(tenant) if self.target else None
        return getattr(api, self.method)(self.url(key), body, format="json")


WRITES = {
    "key-create": Write(
        "post",
        lambda key: "/api/v1/keys",
        {"label": "acme", "client_budget": "10", "your_cost": "6"},
    ),
    "key-create-wallet": Write(
        "post",
        lambda key: "/api/v1/keys",
        {"label": "acme", "funding": "wallet", "spend_cap": "5"},
    ),
    "key-patch": Write(
        "patch",
        lambda key: f"/api/v1/keys/{key.pk}",  # type: ignore[union-attr]
        {"label": "renamed", "spend_cap": "50"},
        prepaid_key,
    ),
    "key-top-up": Write(
        "post",
        lambda key: f"/api/v1/keys/{key.pk}/top-up",  # type: ignore[union-attr]
        {"client_amount": "10"},
        prepaid_key,
    ),
    "sub-account-create": Write(
        "post", lambda key: "/v1/sub-accounts", {"name": "team-b", "spend_cap_cents": 500}
    ),
    "sub-account-patch": Write(
        "patch",
        lambda key: f"/v1/sub-accounts/{key.pk}",  # type: ignore[union-attr]
        {"spend_cap_cents": 700},
        sub_account,
    ),
}

# Misspelt or foreign fields, per endpoint: each is a 400 naming it, however it is spelt.
TYPOS = [
    ("key-create-wallet", "spendcap"),
    ("key-create-wallet", "spend-cap"),
    ("key-create-wallet", "Spend_Cap"),
    ("key-create-wallet", "spend_cap_cents"),
    ("key-create-wallet", "budget_periode"),
    ("key-create", "clientBudget"),
    ("key-create", "your_costs"),
    ("key-create", "model"),
    ("key-create", "expires"),
    ("key-create", "rate_limit_rpm"),
    ("key-create", "label "),
    ("key-patch", "spendcap"),
    ("key-patch", "lable"),
    ("key-patch", "max_concurency"),
    ("key-patch", "tag"),
    ("key-top-up", "amount"),
    ("key-top-up", "client_amout"),
    ("key-top-up", "clientAmount"),
    ("sub-account-create", "spend_cap"),
    ("sub-account-create", "spend_cap_cent"),
    ("sub-account-create", "rpm"),
    ("sub-account-create", "label"),
    ("sub-account-patch", "spendcap_cents"),
    ("sub-account-patch", "rate_limit"),
    ("sub-account-patch", "name "),
]

# Every money input of the USD API, with the endpoint that takes it.
MONEY_FIELDS = [
    ("key-create", "client_budget"),
    ("key-create", "your_cost"),
    ("key-create-wallet", "spend_cap"),
    ("key-patch", "spend_cap"),
    ("key-top-up", "client_amount"),
]

# Not plain decimal strings, though Python's Decimal() or DRF's DecimalField would read
# most of them as an amount ("1_0" and "١٠" as 10).
NOT_DECIMAL_STRINGS: list[Any] = [
    "1_0",
    "١٠",
    "１０",
    "۱۰",
    "1e2",
    "1E-2",
    "+5",
    "-5",
    "-0",
    " 5",
    "5 ",
    "5\n",
    "5.",
    ".5",
    "NaN",
    "Infinity",
    "-Infinity",
    "0x10",
    "1,000",
    "10 USD",
    "$10",
    "10.0000000001",
    "1000000001",
    "",
    "   ",
]
# The API speaks decimal strings: a JSON number is refused whole or fractional (a fraction
# would arrive as a binary float), and so are booleans, lists and objects.
NOT_STRINGS: list[Any] = [
    10,
    10.5,
    1e2,
    0,
    True,
    False,
    ["10"],
    {"amount": "10"},
]
# Integers are JSON integers: not strings of digits, fractions, floats or booleans.
NOT_INTEGERS: list[Any] = [
    "60",
    "١٠",
    60.0,
    60.5,
    True,
    False,
    "",
    [60],
]
INTEGER_FIELDS = [
    ("key-create", "rpm"),
    ("key-create", "tpm"),
    ("key-create", "max_concurrency"),
    ("key-patch", "rpm"),
    ("key-patch", "max_concurrency"),
    ("sub-account-create", "spend_cap_cents"),
    ("sub-account-create", "rate_limit_rpm"),
    ("sub-account-patch", "spend_cap_cents"),
    ("sub-account-patch", "rate_limit_rpm"),
]
# Text is a JSON string, not a number or a boolean turned into text.
TEXT_FIELDS = [
    ("key-create", "label"),
    ("key-create", "default_tag"),
    ("key-patch", "label"),
    ("sub-account-create", "name"),
    ("sub-account-create", "default_tag"),
    ("sub-account-patch", "name"),
]

TEXT_LIMITS = [
    ("key-create", "label", 200),
    ("key-create", "default_tag", 100),
    ("key-patch", "default_tag", 100),
    ("sub-account-create", "name", 200),
    ("sub-account-create", "default_tag", 100),
    ("sub-account-patch", "default_tag", 100),
]


def books(*tenants: Tenant) -> list[Any]:
    """Everything a refused write must leave alone."""
    return [
        (
            wallet_for_tenant(tenant=t).balance_nanos,
            list(ClientKey.objects.filter(tenant=t).order_by("pk").values()),
            LedgerEntry.objects.filter(wallet__tenant=t).count(),
        )
        for t in tenants
    ]


def refused(api, tenant, outsider, endpoint: str, body: Any, field: str) -> dict[str, Any]:
    """Send ``body`` to ``endpoint`` and check it is a 400 naming ``field``, writing nothing."""
    write = WRITES[endpoint]
    wallet_credit(tenant=tenant, amount_nanos=parse_usd("200"), reason="test funds")
    key = write.target(tenant) if write.target else None
    before = books(tenant, outsider[0])

    response = getattr(api, write.method)(
        write.url(key), json.dumps(body), content_type="application/json"
    )

    assert response.status_code == 400, (body, response.content)
    errors = response.json()
    assert field in errors, (body, errors)
    assert all(isinstance(message, str) for message in errors[field]), (body, errors)
    assert books(tenant, outsider[0]) == before, body
    return errors


@pytest.mark.parametrize("endpoint", WRITES)
def test_each_write_accepts_its_valid_body(api, tenant, outsider, endpoint):
    write = WRITES[endpoint]
    wallet_credit(tenant=tenant, amount_nanos=parse_usd("200"), reason="test funds")

    response = write.send(api, tenant, write.valid)

    assert response.status_code in (200, 201), response.content


@pytest.mark.parametrize(("endpoint", "typo"), TYPOS)
def test_an_unknown_field_is_a_400_naming_it(api, tenant, outsider, endpoint, typo):
    body = {**WRITES[endpoint].valid, typo: "5"}

    errors = refused(api, tenant, outsider, endpoint, body, typo)

    assert list(errors) == [typo]


def test_the_spendcap_typo_no_longer_creates_an_uncapped_key(api, tenant, outsider):
    body = {"label": "x", "funding": "wallet", "spendcap": "5"}

    errors = refused(api, tenant, outsider, "key-create", body, "spendcap")

    assert errors == {"spendcap": ["Unknown field."]}


@pytest.mark.parametrize("endpoint", WRITES)
def test_unknown_fields_are_named_with_the_other_fields_errors(api, tenant, outsider, endpoint):
    write = WRITES[endpoint]
    # A known field with a bad value, beside two unknown ones: all three are named at once.
    bad = next(iter(write.valid))
    body = {**write.valid, bad: {"not": "valid"}, "zzz": 1, "aaa": None}

    errors = refused(api, tenant, outsider, endpoint, body, "zzz")

    assert set(errors) == {bad, "zzz", "aaa"}


@pytest.mark.parametrize(("endpoint", "field"), MONEY_FIELDS)
def test_money_is_only_a_plain_decimal_string(api, tenant, outsider, endpoint, field):
    for amount in NOT_DECIMAL_STRINGS + NOT_STRINGS:
        body = {**WRITES[endpoint].valid, field: amount}

        errors = refused(api, tenant, outsider, endpoint, body, field)

        assert list(errors) == [field], (amount, errors)


@pytest.mark.parametrize(
    ("endpoint", "field"), [("key-create-wallet", "spend_cap"), ("key-patch", "spend_cap")]
)
def test_a_blank_cap_is_an_error_and_null_means_no_cap(api, tenant, outsider, endpoint, field):
    errors = refused(api, tenant, outsider, endpoint, {**WRITES[endpoint].valid, field: ""}, field)
    assert errors[field] == ["May not be blank; send null to leave it unset."]

    response = WRITES[endpoint].send(api, tenant, {**WRITES[endpoint].valid, field: None})

    assert response.status_code in (200, 201), response.content
    assert response.json()["spend_cap"] is None


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("10", "10.00"),
        ("10.5", "10.50"),
        ("007.25", "7.25"),
        ("0.000000001", "0.000000001"),
        ("1.1000000000", "1.10"),  # ten places, of which the value uses one
    ],
)
def test_plain_decimal_strings_are_read_exactly(api, tenant, outsider, text, shown):
    wallet_credit(tenant=tenant, amount_nanos=parse_usd("200"), reason="test funds")

    response = api.post(
        "/api/v1/keys", {"label": "x", "funding": "wallet", "spend_cap": text}, format="json"
    )

    assert response.status_code == 201, response.content
    assert response.json()["spend_cap"] == shown


@pytest.mark.parametrize(("endpoint", "field"), INTEGER_FIELDS)
def test_integers_are_only_json_integers(api, tenant, outsider, endpoint, field):
    for value in NOT_INTEGERS:
        body = {**WRITES[endpoint].valid, field: value}

        errors = refused(api, tenant, outsider, endpoint, body, field)

        assert list(errors) == [field], (value, errors)


@pytest.mark.parametrize(("endpoint", "field"), TEXT_FIELDS)
def test_text_is_only_a_json_string(api, tenant, outsider, endpoint, field):
    for value in [0, 12.5, True, ["x"], {"x": 1}]:
        body = {**WRITES[endpoint].valid, field: value}

        errors = refused(api, tenant, outsider, endpoint, body, field)

        assert list(errors) == [field], (value, errors)


@pytest.mark.parametrize(("endpoint", "field", "limit"), TEXT_LIMITS)
def test_text_is_measured_as_sent(api, tenant, outsider, endpoint, field, limit):
    # str.strip() removes these, and DRF measured what was left: 101 characters passed.
    for padded in [" " + "x" * limit, "\x1d" + "x" * limit, "x" * limit + "\n"]:
        body = {**WRITES[endpoint].valid, field: padded}

        refused(api, tenant, outsider, endpoint, body, field)


def test_a_model_name_is_only_a_json_string(api, tenant, outsider):
    for value in [0, True, ["x"]]:
        body = {**WRITES["key-create"].valid, "models": [value]}

        refused(api, tenant, outsider, "key-create", body, "models")


@pytest.mark.parametrize("endpoint", WRITES)
def test_a_body_that_is_not_an_object_is_a_400(api, tenant, outsider, endpoint):
    for body in [[], ["label"], "label", 5, None, True]:
        refused(api, tenant, outsider, endpoint, body, "non_field_errors")

"""Schemathesis against the served schema: generated requests, checked answers.

Every operation of ``/api/v1/schema/`` is called with requests schemathesis derives from the
schema, valid ones and invalid ones (wrong types, unknown fields, values outside a pattern),
with a reseller's token, through Django's WSGI application in this process. Each answer must
be no 5xx and exactly what the operation documents: its status, content type, headers and
body schema; and input the schema forbids must be refused.

Bounded and reproducible: a few examples per operation from a fixed seed (``derandomize``),
so the run takes seconds and fails the same way every time.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from django.core import signals
from django.core.cache import cache
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from hypothesis import HealthCheck, settings
from rest_framework.throttling import UserRateThrottle
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    allow_header_conformance,
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
    unsupported_method,
)

from accounts.models import Tenant
from accounts.services import IssuedToken
from billing.money import parse_usd
from billing.services import wallet_credit
from billing.top_ups import top_up_create
from keys.models import ClientKey
from keys.services import key_create
from tests.billing.stripe_fake import StripeFake, stripe_fake, stripe_fake_server

__all__ = ["stripe_fake", "stripe_fake_server"]  # fixtures

SCHEMA_URL = "/api/v1/schema/"
# Per operation and generation phase: enough to meet every documented error of each
# operation, few enough that the run takes seconds.
MAX_EXAMPLES = 20
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
    unsupported_method,
    allow_header_conformance,
]


schema = schemathesis.openapi.from_wsgi(SCHEMA_URL, get_wsgi_application())
# Query parameters the API does not know are ignored, as HTTP APIs conventionally do, so
# invalid requests are generated without them (bodies: unknown fields are refused and the
# schema says so with additionalProperties: false).
schema.config.generation.update(allow_extra_parameters=False)


@pytest.fixture
def keep_test_connection(db: None) -> Iterator[None]:
    # As Django's test client does: a request must not close the test's connection, whose
    # transaction holds the test's rows (and rolls them back after it).
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    try:
        yield
    finally:
        signals.request_started.connect(close_old_connections)
        signals.request_finished.connect(close_old_connections)


@pytest.fixture
def reseller_with_keys(
    reseller: tuple[Tenant, IssuedToken], stripe_fake: StripeFake
) -> dict[str, Any]:
    """A funded reseller, its token, one key of each kind and a card top-up for the paths
    with an id. Card top-ups go to the local fake of Stripe's API (never the network)."""
    tenant, token = reseller
    wallet_credit(tenant=tenant, amount_nanos=parse_usd("1000"), reason="test funds")
    prepaid = key_create(
        tenant=tenant,
        actor=None,
        label="prepaid",
        client_budget_nanos=parse_usd("100"),
        your_cost_nanos=parse_usd("60"),
    ).key
    sub_account = key_create(
        tenant=tenant,
        actor=None,
        label="sub-account",
        funding=ClientKey.Funding.WALLET,
        spend_cap_nanos=parse_usd("10"),
    ).key
    top_up = top_up_create(tenant=tenant, actor=None, amount_nanos=parse_usd("20"))
    return {
        "tenant": tenant,
        "headers": {"Authorization": f"Bearer {token.secret}"},
        "ids": {"/api/v1/keys/": prepaid.pk, "/v1/sub-accounts/": sub_account.pk},
        "top_up_id": top_up.pk,
    }


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
@pytest.mark.usefixtures("keep_test_connection")
def test_generated_requests_get_documented_answers(
    case: schemathesis.Case, reseller_with_keys: dict[str, Any]
) -> None:
    given = reseller_with_keys
    key_id = (case.path_parameters or {}).get("key_id")
    if isinstance(key_id, int) and not isinstance(key_id, bool) and key_id >= 0:
        # A generated id would be a 404: send a real key of the right kind instead. Ids
        # that are not (text, negative numbers) stay as generated: JSON 404s.
        ids = given["ids"]
        case.path_parameters["key_id"] = next(ids[p] for p in ids if case.path.startswith(p))
    top_up_id = (case.path_parameters or {}).get("top_up_id")
    if isinstance(top_up_id, int) and not isinstance(top_up_id, bool) and top_up_id >= 0:
        case.path_parameters["top_up_id"] = given["top_up_id"]
    # The REST API's courtesy throttle would turn a long run into 429s.
    owner = given["tenant"].owner_id
    cache.delete(UserRateThrottle.cache_format % {"scope": "user", "ident": owner})
    case.call_and_validate(headers=given["headers"], checks=CHECKS)

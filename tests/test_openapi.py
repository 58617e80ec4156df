"""The REST API's OpenAPI schema: generated without a warning, valid, complete, and true.

Complete: every route under ``/api/v1/`` and the sub-account API is documented with its
methods. True: every success and error answer of a real session through the HTTP client has
exactly the fields, types and nullability its operation documents.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.urls import URLPattern, URLResolver, get_resolver
from django.utils import timezone
from rest_framework.test import APIClient

from alerts.services import alert_test_send
from billing.money import Usage, parse_usd
from billing.services import wallet_credit
from keys.models import ClientKey
from tests.billing.stripe_fake import stripe_fake, stripe_fake_server
from tests.keys.factories import WalletKeyFactory
from tests.metering import charge
from tests.usage.factories import TraceFactory

__all__ = ["stripe_fake", "stripe_fake_server"]  # fixtures: card top-ups against the fake Stripe

SCHEMA_URL = "/api/v1/schema/"
# The reference page over the schema (tests/test_api_docs.py): no operation of its own.
DOCS_URL = "/api/v1/docs/"

# Every documented operation (PRODUCT.md §5, README "API").
OPERATIONS = {
    "/api/v1/account": {"get", "patch"},
    "/api/v1/wallet": {"get"},
    "/api/v1/wallet/ledger": {"get"},
    "/api/v1/wallet/top-ups": {"get", "post"},
    "/api/v1/wallet/top-ups/{top_up_id}": {"get"},
    "/api/v1/keys": {"get", "post"},
    "/api/v1/keys/{key_id}": {"get", "patch", "delete"},
    "/api/v1/keys/{key_id}/top-up": {"post"},
    "/api/v1/keys/{key_id}/requests": {"get", "delete"},
    "/api/v1/keys/{key_id}/usage": {"get"},
    "/api/v1/keys/{key_id}/statements/{month}": {"get"},
    "/api/v1/requests": {"get"},
    "/api/v1/usage": {"get"},
    "/api/v1/usage/by-tag": {"get"},
    "/api/v1/earnings": {"get"},
    "/api/v1/alerts/settings": {"get", "patch"},
    "/api/v1/alerts/webhook-secret": {"post"},
    "/api/v1/alerts/deliveries": {"get"},
    "/api/v1/keys/{key_id}/alerts": {"get", "patch"},
    "/v1/sub-accounts": {"get", "post"},
    "/v1/sub-accounts/{key_id}": {"get", "patch", "delete"},
    "/v1/sub-accounts/{key_id}/usage": {"get"},
    "/v1/usage/by-tag": {"get"},
}

KEY_CREATE_FIELDS = {
    "label",
    "client_budget",
    "your_cost",
    "funding",
    "spend_cap",
    "budget_period",
    "rpm",
    "tpm",
    "max_concurrency",
    "models",
    "expires_at",
    "default_tag",
}
KEY_OBJECT_MONEY = {"client_budget", "client_spent", "client_remaining", "cost_funded"}
KEY_OBJECT_FIELDS = {
    *KEY_OBJECT_MONEY,
    "id",
    "label",
    "prefix",
    "funding",
    "ratio",
    "margin",
    "cost_spent",
    "profit",
    "status",
    "limits",
}


# Bodies that are not JSON, or JSON nested past what the parser reads (both 400s).
NOT_JSON = [
    b"{",
    b'{"label": "x",}',
    b'{"client_amount": NaN}',
    b"\xff",
    b'{"label": "\\ud800"}',
    b"[" * 100_000 + b"]" * 100_000,
    b'{"a":' * 5_000 + b"1" + b"}" * 5_000,
]
# The query parameters of every report (usage.windows.WindowSerializer).
SPAN = {"window", "since", "until", "tz"}
WINDOWED = [
    "/api/v1/keys/{key_id}/usage",
    "/api/v1/usage",
    "/api/v1/usage/by-tag",
    "/api/v1/earnings",
    "/v1/sub-accounts/{key_id}/usage",
    "/v1/usage/by-tag",
]


def generate(path: Path, *options: str) -> dict[str, Any]:
    """The schema as ``manage.py spectacular`` writes it."""
    call_command("spectacular", *options, "--format", "openapi-json", "--file", str(path))
    return json.loads(path.read_text())


@pytest.fixture(scope="module")
def schema(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return generate(tmp_path_factory.mktemp("openapi") / "schema.json")


def resolve(schema: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    """A schema node with its ``$ref`` (or an enum's one-item ``allOf``) followed."""
    while True:
        if "$ref" in node:
            node = schema["components"]["schemas"][node["$ref"].rpartition("/")[2]]
        elif len(node.get("allOf", [])) == 1:
            node = {**node, **node["allOf"][0]}
            del node["allOf"]
        else:
            return node


def request_schema(schema: dict[str, Any], path: str, method: str) -> dict[str, Any]:
    body = schema["paths"][path][method]["requestBody"]["content"]["application/json"]
    return resolve(schema, body["schema"])


def request_fields(schema: dict[str, Any], path: str, method: str) -> dict[str, Any]:
    return request_schema(schema, path, method)["properties"]


def response_schema(
    schema: dict[str, Any], path: str, method: str, status: int
) -> dict[str, Any] | None:
    documented = schema["paths"][path][method]["responses"].get(str(status))
    assert documented is not None, f"{method.upper()} {path} does not document {status}"
    if "content" not in documented:
        return None
    return resolve(schema, documented["content"]["application/json"]["schema"])


def mismatches(schema: dict[str, Any], node: dict[str, Any], value: Any, where: str) -> list[str]:
    """How ``value`` departs from the schema ``node``: exactly the documented fields (no
    more, none required missing), each of its documented type, null only where nullable."""
    node = resolve(schema, node)
    if value is None:
        return [] if node.get("nullable") else [f"{where}: null, not documented as nullable"]
    if "oneOf" in node:
        branches = [mismatches(schema, branch, value, where) for branch in node["oneOf"]]
        if sum(not each for each in branches) == 1:
            return []
        return [f"{where}: {value!r} matches no or several oneOf branches: {branches}"]
    kind = node.get("type")
    if kind == "object":
        if not isinstance(value, dict):
            return [f"{where}: {value!r} is not an object"]
        if "properties" not in node:  # {field: [message]}
            return [
                problem
                for name, item in value.items()
                for problem in mismatches(
                    schema, node["additionalProperties"], item, f"{where}.{name}"
                )
            ]
        fields = node["properties"]
        problems = [f"{where}.{name}: not documented" for name in sorted(set(value) - set(fields))]
        problems += [
            f"{where}.{name}: documented as required, missing"
            for name in sorted(set(node.get("required", [])) - set(value))
        ]
        return problems + [
            problem
            for name, item in value.items()
            if name in fields
            for problem in mismatches(schema, fields[name], item, f"{where}.{name}")
        ]
    if kind == "array":
        if not isinstance(value, list):
            return [f"{where}: {value!r} is not an array"]
        return [
            problem
            for index, item in enumerate(value)
            for problem in mismatches(schema, node["items"], item, f"{where}[{index}]")
        ]
    if kind == "integer":
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif kind == "boolean":
        ok = isinstance(value, bool)
    elif kind == "string":
        ok = isinstance(value, str) and string_matches(node, value)
    else:
        return [f"{where}: the schema gives no type"]
    return [] if ok else [f"{where}: {value!r} is not {kind} {node.get('format', '')}".rstrip()]


def string_matches(node: dict[str, Any], value: str) -> bool:
    if "enum" in node and value not in node["enum"]:
        return False
    if "pattern" in node and re.search(node["pattern"], value) is None:
        return False
    parse = {"date-time": datetime.fromisoformat, "date": date.fromisoformat}.get(
        node.get("format", "")
    )
    if parse is not None:
        try:
            parse(value)
        except ValueError:
            return False
    return True


# -------------------------------------------------------------------- generation, validity


def test_schema_generates_without_warnings_and_validates(tmp_path):
    # Any generator warning or error, or a schema the OpenAPI 3 specification refuses, is a
    # CommandError here; the generator's messages are in the captured stderr.
    generated = generate(tmp_path / "schema.json", "--validate", "--fail-on-warn")

    assert generated["info"]["title"] == "Tollgate reseller API"


def test_schema_documents_every_operation_and_nothing_else(schema):
    assert {path: set(item) for path, item in schema["paths"].items()} == OPERATIONS


def url_routes(patterns: list[URLPattern | URLResolver], prefix: str = "/") -> Iterator[str]:
    """Every Django route, ``<int:key_id>`` written as OpenAPI's ``{key_id}``."""
    for pattern in patterns:
        route = prefix + str(pattern.pattern)
        if isinstance(pattern, URLResolver):
            yield from url_routes(pattern.url_patterns, route)
        else:
            yield re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", route)


def test_every_reseller_api_route_is_in_the_schema(schema):
    routes = {
        route
        for route in url_routes(get_resolver().url_patterns)
        if route.startswith(("/api/v1/", "/v1/")) and route not in (SCHEMA_URL, DOCS_URL)
    }

    assert routes == set(OPERATIONS)
    assert routes <= set(schema["paths"])


def test_every_operation_needs_the_reseller_token(schema):
    schemes = schema["components"]["securitySchemes"]
    assert set(schemes) == {"resellerApiToken"}
    assert (schemes["resellerApiToken"]["type"], schemes["resellerApiToken"]["scheme"]) == (
        "http",
        "bearer",
    )
    assert "reseller API token" in schemes["resellerApiToken"]["description"]
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            assert operation["security"] == [{"resellerApiToken": []}], (method, path)
            assert "401" in operation["responses"], (method, path)


def test_every_operation_has_a_summary_a_tag_and_its_views_name(schema):
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            assert operation["summary"] and len(operation["tags"]) == 1, (method, path)
    assert schema["paths"]["/api/v1/keys/{key_id}/top-up"]["post"]["operationId"] == "key_top_up"


def test_served_schema_is_the_generated_one(client, schema):
    response = client.get(SCHEMA_URL, {"format": "json"})

    assert response.status_code == 200
    assert response.json() == schema


# ------------------------------------------------------------------------ request shapes


def test_key_create_documents_the_product_fields_and_the_one_time_secret(schema):
    assert set(request_fields(schema, "/api/v1/keys", "post")) == KEY_CREATE_FIELDS

    created = response_schema(schema, "/api/v1/keys", "post", 201)
    assert created is not None
    assert {"key", *KEY_OBJECT_FIELDS} <= set(created["properties"])
    assert {"key", *KEY_OBJECT_FIELDS} <= set(created["required"])
    for field in KEY_OBJECT_MONEY:
        assert created["properties"][field]["type"] == "string", field
        assert created["properties"][field]["format"] == "decimal", field
    shown = response_schema(schema, "/api/v1/keys/{key_id}", "get", 200)
    assert shown is not None
    assert "key" not in shown["properties"]
    refused = response_schema(schema, "/api/v1/keys", "post", 402)
    assert refused is not None
    assert set(refused["properties"]) == {"detail", "code"}


def test_key_changes_document_what_can_change(schema):
    assert set(request_fields(schema, "/api/v1/keys/{key_id}", "patch")) == {
        "label",
        "default_tag",
        "rpm",
        "tpm",
        "max_concurrency",
        "models",
        "expires_at",
        "spend_cap",
        "budget_period",
        "status",
    }
    assert set(request_fields(schema, "/api/v1/keys/{key_id}/top-up", "post")) == {"client_amount"}


def test_sub_account_api_documents_integer_cents(schema):
    fields = request_fields(schema, "/v1/sub-accounts", "post")
    assert set(fields) == {"name", "spend_cap_cents", "rate_limit_rpm", "default_tag"}
    assert fields["spend_cap_cents"]["type"] == "integer"

    created = response_schema(schema, "/v1/sub-accounts", "post", 201)
    assert created is not None
    assert {"id", "key", "spend_cap_cents"} <= set(created["required"])
    assert created["properties"]["spend_cap_cents"]["type"] == "integer"
    usage = response_schema(schema, "/v1/sub-accounts/{key_id}/usage", "get", 200)
    assert usage is not None
    summary = resolve(schema, usage["properties"]["summary"])
    assert {"requests", "cost_cents"} <= set(summary["properties"])
    assert summary["properties"]["cost_cents"]["type"] == "integer"


@pytest.mark.parametrize(
    ("path", "parameters"),
    [
        ("/api/v1/wallet/ledger", {"kind", "page", "page_size"}),
        ("/api/v1/keys", {"status", "page", "page_size"}),
        (
            "/api/v1/keys/{key_id}/requests",
            {"key_id", "since", "until", "model", "status", "tag", "page", "page_size", "format"},
        ),
        (
            "/api/v1/requests",
            {"key", "since", "until", "model", "status", "tag", "page", "page_size", "format"},
        ),
        ("/api/v1/keys/{key_id}/usage", {"key_id", "format", *SPAN}),
        ("/api/v1/keys/{key_id}/statements/{month}", {"key_id", "month", "format"}),
        ("/api/v1/usage", {"format", *SPAN}),
        ("/api/v1/usage/by-tag", {"format", *SPAN}),
        ("/api/v1/earnings", {"format", *SPAN}),
        ("/api/v1/alerts/deliveries", {"status", "channel", "page", "page_size"}),
        ("/v1/sub-accounts", {"page", "page_size"}),
        ("/v1/sub-accounts/{key_id}/usage", {"key_id", "format", *SPAN}),
        ("/v1/usage/by-tag", {"format", *SPAN}),
    ],
)
def test_reads_document_their_query_parameters(schema, path, parameters):
    documented = schema["paths"][path]["get"].get("parameters", [])

    assert {parameter["name"] for parameter in documented} == parameters


WINDOWS_ACCEPTED = ["1h", "24h", "30d", "366d", "0366d", "8784h"]
# Not a number of days or hours as the pattern has it: refused, and the pattern says so.
WINDOWS_MALFORMED = ["", " 30d", "30d ", "30 d", "1w", "30", "d", "-1d", "1.5d", "30D", "٣٠d"]
# Days or hours, but outside 1h..366d: refused; the description says so.
WINDOWS_OUT_OF_RANGE = ["0h", "0d", "367d", "8785h", "9999d"]


@pytest.mark.usefixtures("api_throttle_reset")
def test_window_is_documented_as_the_pattern_the_api_reads(schema, api, tenant, outsider):
    key = WalletKeyFactory.create(tenant=tenant)
    documented = {
        path: {p["name"]: p for p in schema["paths"][path]["get"]["parameters"]}["window"]
        for path in WINDOWED
    }
    for path, parameter in documented.items():
        assert parameter["schema"]["type"] == "string", path
        assert "1h to 366d" in parameter["description"], path
        pattern = parameter["schema"]["pattern"]
        url = path.format(key_id=key.pk)
        for window in WINDOWS_ACCEPTED:
            assert re.search(pattern, window), window
            assert api.get(url, {"window": window}).status_code == 200, (url, window)
        for window in WINDOWS_MALFORMED:
            assert not re.search(pattern, window), window
            assert api.get(url, {"window": window}).status_code == 400, (url, window)
        for window in WINDOWS_OUT_OF_RANGE:
            assert re.search(pattern, window), window
            assert api.get(url, {"window": window}).status_code == 400, (url, window)


def test_writes_document_that_they_take_no_other_field(schema):
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            if method in ("post", "patch") and "requestBody" in operation:
                assert request_schema(schema, path, method)["additionalProperties"] is False


def test_money_inputs_are_documented_as_decimal_strings(schema):
    fields = request_fields(schema, "/api/v1/keys", "post")
    for name in ("client_budget", "your_cost", "spend_cap"):
        assert fields[name]["type"] == "string", name
        pattern = fields[name]["pattern"]
        for text in ("10", "10.50", "0.000000001", "007"):
            assert re.search(pattern, text), text
        for text in ("1_0", "١٠", "1e2", "+5", "-5", " 5", "5.", ".5", "NaN", "", "１０"):
            assert not re.search(pattern, text), text


# --------------------------------------------------------------- documented = answered


def call_as(reseller: Any, schema: dict[str, Any]) -> Session:
    """A Session with another reseller's token."""
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {reseller[1].secret}")
    return Session(schema, client)


class Session:
    """Calls the API and checks each answer against what its operation documents."""

    def __init__(self, schema: dict[str, Any], client: APIClient) -> None:
        self.schema = schema
        self.client = client
        self.answered: set[tuple[str, str, int]] = set()

    def __call__(
        self,
        method: str,
        path: str,
        status: int,
        body: dict[str, Any] | bytes | None = None,
        query: dict[str, Any] | None = None,
        **ids: int,
    ) -> Any:
        url = path.format(**ids)
        if method in ("get", "delete"):
            response = getattr(self.client, method)(url, query)
        elif isinstance(body, bytes):  # sent as it is, JSON or not
            response = getattr(self.client, method)(url, body, content_type="application/json")
        else:
            response = getattr(self.client, method)(url, body, format="json")
        assert response.status_code == status, (method, url, response.content)
        documented = response_schema(self.schema, path, method, status)
        self.answered.add((path, method, status))
        if documented is None:
            assert not response.content, (method, url)
            return None
        answer = response.json()
        assert mismatches(self.schema, documented, answer, f"{method.upper()} {url}") == []
        return answer


@pytest.mark.usefixtures("books_balance", "api_throttle_reset")
def test_every_answer_has_exactly_the_documented_fields_and_types(
    schema, api, tenant, outsider, upstream, price, stripe_fake, settings
):
    wallet_credit(tenant=tenant, amount_nanos=parse_usd("200"), reason="test funds")
    call = Session(schema, api)
    later = (timezone.now() + timedelta(days=30)).isoformat()

    call("get", "/api/v1/wallet", 200)
    call("get", "/api/v1/account", 200)
    call("patch", "/api/v1/account", 200, {"timezone": "Asia/Kolkata", "support_email": ""})
    created = call(
        "post",
        "/api/v1/keys",
        201,
        {
            "label": "acme-corp-prod",
            "client_budget": "100",
            "your_cost": "60",
            "funding": "prepaid",
            "spend_cap": None,
            "budget_period": "none",
            "rpm": 60,
            "tpm": 100_000,
            "max_concurrency": 3,
            "models": ["mock-gpt"],
            "expires_at": later,
            "default_tag": "prod",
        },
    )
    key_id = created["id"]
    key = ClientKey.objects.get(pk=key_id)
    usage = Usage(input_tokens=2_000_000, output_tokens=1_000)
    charge(key=key, price=price, request_id="req-1", usage=usage)
    TraceFactory.create(
        client_key=key, request_id="req-1", cost_nanos=parse_usd("2"), client_nanos=parse_usd("3")
    )
    TraceFactory.create(client_key=key, upstream=upstream, ttft_ms=None, tag="")

    call("get", "/api/v1/keys", 200, query={"status": "active"})
    call("get", "/api/v1/keys/{key_id}", 200, key_id=key_id)
    call("patch", "/api/v1/keys/{key_id}", 200, {"label": "acme", "tpm": None}, key_id=key_id)
    call("post", "/api/v1/keys/{key_id}/top-up", 200, {"client_amount": "10"}, key_id=key_id)
    call("get", "/api/v1/keys/{key_id}/requests", 200, query={"model": "mock-gpt"}, key_id=key_id)
    call("get", "/api/v1/keys/{key_id}/usage", 200, query={"window": "7d"}, key_id=key_id)
    call("get", "/api/v1/requests", 200, query={"key": key_id, "status": "ok"})
    month = timezone.now().astimezone(tenant.zone).strftime("%Y-%m")
    statement = "/api/v1/keys/{key_id}/statements/{month}"
    call("get", statement, 200, key_id=key_id, month=month)  # type: ignore[arg-type]
    call("get", "/api/v1/usage", 200, query={"since": "2026-01-01", "tz": "Asia/Kathmandu"})
    call("get", "/api/v1/usage/by-tag", 200)
    call("get", "/api/v1/earnings", 200, query={"window": "24h"})
    call("get", "/api/v1/earnings", 200, query={"since": "2025-01-01", "until": "2026-01-01"})

    call("get", "/api/v1/alerts/settings", 200)
    alerts = call(
        "patch",
        "/api/v1/alerts/settings",
        200,
        {
            "key_thresholds": [50, 100],
            "wallet_balance_below": "50",
            "wallet_runway_days_below": 3,
            "email": True,
            "email_to": "ops@example.com",
            "webhook_url": "https://93.184.216.34/hook",
        },
    )
    assert alerts["webhook_secret"].startswith("whsec_")
    assert call("post", "/api/v1/alerts/webhook-secret", 200)["webhook_secret"]
    call("get", "/api/v1/keys/{key_id}/alerts", 200, key_id=key_id)
    call("patch", "/api/v1/keys/{key_id}/alerts", 200, {"thresholds": [90]}, key_id=key_id)
    alert_test_send(tenant=tenant, actor=None)
    listed = call("get", "/api/v1/alerts/deliveries", 200, query={"channel": "webhook"})
    assert listed["count"] == 1

    sub_account = call(
        "post",
        "/v1/sub-accounts",
        201,
        {"name": "team-a", "spend_cap_cents": 2_500, "rate_limit_rpm": 30, "default_tag": "a"},
    )
    TraceFactory.create(
        client_key=ClientKey.objects.get(pk=sub_account["id"]), client_nanos=parse_usd("0.5")
    )
    call("get", "/v1/sub-accounts", 200)
    call("get", "/v1/sub-accounts/{key_id}", 200, key_id=sub_account["id"])
    call(
        "patch",
        "/v1/sub-accounts/{key_id}",
        200,
        {"spend_cap_cents": None},
        key_id=sub_account["id"],
    )
    call("get", "/v1/sub-accounts/{key_id}/usage", 200, key_id=sub_account["id"])
    call("get", "/v1/usage/by-tag", 200)
    call("delete", "/v1/sub-accounts/{key_id}", 204, key_id=sub_account["id"])

    assert call("delete", "/api/v1/keys/{key_id}/requests", 200, key_id=key_id) == {"deleted": 2}
    deleted = call("delete", "/api/v1/keys/{key_id}", 200, key_id=key_id)
    assert deleted["refunded"] != "0.00"
    call("get", "/api/v1/wallet/ledger", 200, query={"kind": "key_funding"})
    # Card top-ups, against the fake Stripe (tests/billing/stripe_fake.py).
    top_up = call("post", "/api/v1/wallet/top-ups", 201, {"amount": "20"})
    call("get", "/api/v1/wallet/top-ups", 200)
    call("get", "/api/v1/wallet/top-ups/{top_up_id}", 200, top_up_id=top_up["id"])
    call("post", "/api/v1/wallet/top-ups", 400, {"amount": "1"})
    stripe_fake.fail_next(400, "invalid_request_error", "No such price.")
    call("post", "/api/v1/wallet/top-ups", 502, {"amount": "20"})
    theirs = call_as(outsider, schema)("post", "/api/v1/wallet/top-ups", 201, {"amount": "9"})
    call("get", "/api/v1/wallet/top-ups/{top_up_id}", 404, top_up_id=theirs["id"])
    settings.STRIPE_SECRET_KEY = ""
    call("post", "/api/v1/wallet/top-ups", 503, {"amount": "20"})

    # The errors, in their documented shapes.
    call("post", "/api/v1/keys", 400, {"label": "", "rpm": "many"})
    # Each write's 400s: field errors, errors per list item, unknown fields, and bodies
    # that are not JSON at all ({detail, code: parse_error}).
    sub_id = sub_account["id"]
    for path, ids in [
        ("/api/v1/account", {}),
        ("/api/v1/keys", {}),
        ("/api/v1/keys/{key_id}", {"key_id": key_id}),
        ("/api/v1/keys/{key_id}/top-up", {"key_id": key_id}),
        ("/v1/sub-accounts", {}),
        ("/v1/sub-accounts/{key_id}", {"key_id": sub_id}),
        ("/api/v1/alerts/settings", {}),
        ("/api/v1/keys/{key_id}/alerts", {"key_id": key_id}),
    ]:
        method = "patch" if path.endswith(("{key_id}", "account", "settings", "alerts")) else "post"
        for body in NOT_JSON:
            answer = call(method, path, 400, body, **ids)
            assert answer["code"] == "parse_error", (path, body, answer)
        assert "spendcap" in call(method, path, 400, {"spendcap": "5"}, **ids)
    models = call("post", "/api/v1/keys", 400, {"label": "x", "models": ["ok", "m" * 201]})
    assert set(models["models"]) == {"1"}
    models = call("patch", "/api/v1/keys/{key_id}", 400, {"models": [7]}, key_id=key_id)
    assert set(models["models"]) == {"0"}
    for path in WINDOWED:
        call("get", path, 400, query={"window": "1w"}, key_id=key_id)
        call("get", path, 400, query={"tz": "Mars/Olympus"}, key_id=key_id)
        call("get", path, 400, query={"window": "7d", "since": "2026-01-01"}, key_id=key_id)
    call("patch", "/api/v1/account", 400, {"timezone": "Nowhere", "display_name": ""})
    call("get", "/api/v1/keys", 400, query={"page_size": "0"})
    call("get", "/v1/sub-accounts", 400, query={"page": "x"})
    call("get", "/api/v1/keys/{key_id}/requests", 400, query={"status": ""}, key_id=key_id)
    call("get", "/api/v1/requests", 400, query={"format": "xml"})
    call("get", statement, 400, key_id=key_id, month="2025-13")  # type: ignore[arg-type]
    call("get", statement, 400, key_id=key_id, month="2999-01")  # type: ignore[arg-type]
    call("post", "/api/v1/keys", 402, {"label": "big", "client_budget": "900", "your_cost": "900"})
    call("get", "/api/v1/keys/{key_id}", 404, key_id=WalletKeyFactory.create(tenant=outsider[0]).pk)
    call("get", "/api/v1/keys", 404, query={"page": 99})
    call("delete", "/api/v1/keys/{key_id}", 409, key_id=key_id)
    call("patch", "/v1/sub-accounts/{key_id}", 409, {"name": "b"}, key_id=sub_account["id"])
    call("patch", "/api/v1/keys/{key_id}/alerts", 409, {"thresholds": [50]}, key_id=key_id)
    call("patch", "/api/v1/alerts/settings", 400, {"webhook_url": "http://127.0.0.1/hook"})
    call("patch", "/api/v1/keys/{key_id}/alerts", 400, {"thresholds": [0, "x"]}, key_id=key_id)
    call("get", "/api/v1/alerts/deliveries", 400, query={"status": "lost"})
    call("get", "/api/v1/alerts/deliveries", 404, query={"page": 9})
    call(
        "get",
        "/api/v1/keys/{key_id}/alerts",
        404,
        key_id=WalletKeyFactory.create(tenant=outsider[0]).pk,
    )
    Session(schema, APIClient())("get", "/api/v1/wallet", 401)

    succeeded = {(path, method) for path, method, status in call.answered if 200 <= status < 300}
    assert succeeded == {
        (path, method) for path, methods in OPERATIONS.items() for method in methods
    }

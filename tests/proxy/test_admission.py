"""Admission through the real server: who may call, which model, how much, how often.

Every refusal must happen before dispatch (the fake upstream sees nothing), hold nothing,
and charge nothing.
"""

from __future__ import annotations

import re
import threading
from datetime import timedelta
from typing import Any

import httpx
import openai
import orjson
import pytest

from billing.models import LedgerEntry, Reservation
from billing.money import Usage, request_charge
from billing.selectors import wallet_for_tenant
from billing.services import reseller_open, wallet_credit
from keys.models import ClientKey
from keys.services import IssuedKey, key_delete, key_update
from proxy.admission import ProxyError, client_secret
from proxy.io import header_dict
from proxy.wire.base import input_token_bound
from tests.proxy.conftest import (
    GPT_PRICE,
    USD,
    World,
    assert_books_clean,
    assert_nothing_charged,
    charge_seen,
    key_row,
    now_utc,
    post,
    trace_for,
    traces_of,
    usd,
    wait_for,
)

PROMPT = [{"role": "user", "content": "What is the capital of France? Answer in one word."}]
CHAT = {"model": "gpt-fake", "messages": PROMPT}


def assert_openai_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) >= {"message", "type", "code"}
    assert error["code"] == code
    assert error["message"]
    return error


# ---------------------------------------------------------------------------- authentication


def test_missing_key_is_refused_in_the_openai_shape(world: World) -> None:
    response = post(world, "/v1/chat/completions", CHAT, None)

    error = assert_openai_error(response, 401, "missing_api_key")
    assert error["type"] == "authentication_error"
    assert world.fake.records == []


def test_invalid_key_is_refused_and_the_sdk_raises_authentication_error(world: World) -> None:
    real = world.key()
    forged = real.secret[:-4] + ("AAAA" if not real.secret.endswith("AAAA") else "BBBB")
    client = openai.OpenAI(base_url=f"{world.url}/v1", api_key=forged, max_retries=0)

    with pytest.raises(openai.AuthenticationError):
        client.chat.completions.create(
            model="gpt-fake", messages=[{"role": "user", "content": "Hi"}]
        )

    assert_openai_error(
        post(world, "/v1/chat/completions", CHAT, "tg-nonsense"), 401, "invalid_api_key"
    )
    assert world.fake.records == []
    assert_nothing_charged(real)


# ---------------------------------------------------------------------------- one key per request

KEY = "tg-" + "A" * 43
OTHER = "tg-" + "B" * 43


@pytest.mark.parametrize(
    ("headers", "secret"),
    [
        ({"authorization": f"Bearer {KEY}"}, KEY),
        ({"authorization": f"bearer  {KEY} "}, KEY),
        ({"x-api-key": f" {KEY}"}, KEY),
        ({"authorization": f"Bearer {KEY}", "x-api-key": KEY}, KEY),
        # Not a bearer: the x-api-key is the key, as before.
        ({"authorization": "Basic dXNlcjpwYXNz", "x-api-key": KEY}, KEY),
        ({"authorization": "Bearer ", "x-api-key": KEY}, KEY),
        ({"authorization": f"Bearer {KEY}", "x-api-key": " "}, KEY),
        ({"authorization": "Basic dXNlcjpwYXNz"}, None),
        ({"x-api-key": ""}, None),
        ({}, None),
    ],
)
def test_the_key_a_request_carries_is_read_from_either_header(
    headers: dict[str, str], secret: str | None
) -> None:
    assert client_secret(headers) == secret


@pytest.mark.parametrize(
    "headers",
    [
        [("authorization", f"Bearer {KEY}"), ("authorization", f"Bearer {OTHER}")],
        [("authorization", f"Bearer {KEY}"), ("authorization", f"Bearer {KEY}")],
        [("authorization", "Basic dXNlcjpwYXNz"), ("authorization", f"Bearer {KEY}")],
        [("x-api-key", KEY), ("x-api-key", OTHER)],
        [("x-api-key", KEY), ("x-api-key", KEY)],
        [("authorization", f"Bearer {KEY}"), ("x-api-key", OTHER)],
        [("x-api-key", OTHER), ("authorization", f"Bearer {KEY}")],
    ],
    ids=[
        "two-authorization",
        "one-authorization-twice",
        "basic-then-bearer",
        "two-x-api-key",
        "one-x-api-key-twice",
        "bearer-and-another-x-api-key",
        "x-api-key-and-another-bearer",
    ],
)
def test_a_request_carrying_more_than_one_key_is_refused(headers: list[tuple[str, str]]) -> None:
    scope = {"headers": [(name.encode(), value.encode()) for name, value in headers]}

    with pytest.raises(ProxyError) as refused:
        client_secret(header_dict(scope))

    assert (refused.value.status, refused.value.code) == (401, "multiple_api_keys")


def test_a_repeated_header_is_joined_and_the_others_are_kept_as_they_came() -> None:
    scope = {
        "headers": [
            (b"anthropic-beta", b"beta-1"),
            (b"x-tollgate-tag", b"caf\xe9"),
            (b"anthropic-beta", b"beta-2"),
            (b"content-type", b"application/json"),
        ]
    }

    assert header_dict(scope) == {
        "anthropic-beta": "beta-1,beta-2",
        "x-tollgate-tag": "café",
        "content-type": "application/json",
    }


ANTHROPIC_VERSION = ("anthropic-version", "2023-06-01")
# Every proxy path, in each error shape it answers in.
PROXY_CALLS = [
    pytest.param("POST", "/v1/chat/completions", CHAT, False, id="chat"),
    pytest.param("POST", "/v1/responses", {"model": "gpt-fake", "input": "Hi"}, False, id="responses"),
    pytest.param("POST", "/v1/embeddings", {"model": "embed-fake", "input": "Hi"}, False, id="embeddings"),
    pytest.param("POST", "/v1/messages", {"model": "claude-fake", "max_tokens": 10, "messages": PROMPT}, True, id="messages"),
    pytest.param("POST", "/v1/messages/count_tokens", {"model": "claude-fake", "messages": PROMPT}, True, id="count_tokens"),
    pytest.param("GET", "/v1/models", None, False, id="models"),
    pytest.param("GET", "/v1/models", None, True, id="models-anthropic"),
    pytest.param("GET", "/v1/key", None, False, id="key"),
]  # fmt: skip
TWO_KEYS = {
    "two-authorization": lambda a, b: [("authorization", f"Bearer {a}"), ("authorization", f"Bearer {b}")],
    "one-authorization-twice": lambda a, b: [("authorization", f"Bearer {a}"), ("authorization", f"Bearer {a}")],
    "two-x-api-key": lambda a, b: [("x-api-key", a), ("x-api-key", b)],
    "bearer-and-another-x-api-key": lambda a, b: [("authorization", f"Bearer {a}"), ("x-api-key", b)],
}  # fmt: skip


@pytest.mark.usefixtures("books_balance")
@pytest.mark.parametrize("credentials", TWO_KEYS)
@pytest.mark.parametrize(("method", "path", "body", "is_anthropic"), PROXY_CALLS)
def test_a_request_carrying_two_keys_is_refused_on_every_proxy_path(
    world: World,
    method: str,
    path: str,
    body: dict[str, Any] | None,
    is_anthropic: bool,
    credentials: str,
) -> None:
    first, second = world.key(), world.key()
    headers = TWO_KEYS[credentials](first.secret, second.secret)
    if is_anthropic:
        headers.append(ANTHROPIC_VERSION)

    refused = httpx.request(method, f"{world.url}{path}", json=body, headers=headers, timeout=20)

    assert refused.status_code == 401, refused.text
    if is_anthropic:
        error = refused.json()
        assert set(error) == {"type", "error"} and error["type"] == "error"
        assert error["error"]["type"] == "authentication_error"
        assert error["error"]["message"].startswith("More than one API key")
    else:
        openai_error = assert_openai_error(refused, 401, "multiple_api_keys")
        assert openai_error["type"] == "authentication_error"
    assert world.fake.records == []
    assert not Reservation.objects.exists()
    assert_nothing_charged(first)
    assert_nothing_charged(second)
    # Each key alone is served on the same path: the refusal is the two keys' doing.
    alone = [("authorization", f"Bearer {second.secret}"), ANTHROPIC_VERSION]
    served = httpx.request(method, f"{world.url}{path}", json=body, headers=alone, timeout=20)
    assert served.status_code == 200, served.text
    assert_books_clean()


@pytest.mark.usefixtures("books_balance")
@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/chat/completions", CHAT),
        ("/v1/messages", {"model": "claude-fake", "max_tokens": 10, "messages": PROMPT}),
    ],
    ids=["chat", "messages"],
)
def test_authorization_and_x_api_key_carrying_the_same_key_are_served(
    world: World, path: str, body: dict[str, Any]
) -> None:
    issued = world.key()
    headers = {"authorization": f"Bearer {issued.secret}", "x-api-key": issued.secret}

    response = httpx.post(f"{world.url}{path}", json=body, headers=headers, timeout=20)

    assert response.status_code == 200, response.text
    assert trace_for(response.headers["x-request-id"]).client_key_id == issued.key.pk
    assert_books_clean()


def test_a_repeated_anthropic_beta_reaches_the_upstream_whole(world: World) -> None:
    """A repeated header is joined, as RFC 9110 combines list headers, not cut to its last."""
    issued = world.key()
    headers = [
        ("x-api-key", issued.secret),
        ANTHROPIC_VERSION,
        ("anthropic-beta", "beta-one"),
        ("anthropic-beta", "beta-two"),
    ]
    body = {"model": "claude-fake", "max_tokens": 10, "messages": PROMPT}

    response = httpx.post(f"{world.url}/v1/messages", json=body, headers=headers, timeout=20)

    assert response.status_code == 200, response.text
    assert world.fake.last("claude-fake").headers["anthropic-beta"] == "beta-one,beta-two"
    assert_books_clean()


def test_revoked_key_is_refused_at_its_next_request(world: World) -> None:
    issued = world.key()
    assert post(world, "/v1/chat/completions", CHAT, issued.secret).status_code == 200
    spent = key_row(issued).client_spent_nanos

    key_update(tenant=world.tenant, actor=None, key_id=issued.key.pk, changes={"status": "revoked"})
    response = post(world, "/v1/chat/completions", CHAT, issued.secret)

    assert_openai_error(response, 401, "key_revoked")
    assert len(world.fake.records) == 1
    assert key_row(issued).client_spent_nanos == spent
    # Reactivating it works again: revocation is a state, not a deletion.
    key_update(tenant=world.tenant, actor=None, key_id=issued.key.pk, changes={"status": "active"})
    assert post(world, "/v1/chat/completions", CHAT, issued.secret).status_code == 200
    assert_books_clean()


def test_expired_key_is_refused(world: World) -> None:
    issued = world.key(expires_at=now_utc() + timedelta(days=1))
    assert post(world, "/v1/chat/completions", CHAT, issued.secret).status_code == 200
    # A day passes (the row is what the clock would have made of it).
    ClientKey.objects.filter(pk=issued.key.pk).update(expires_at=now_utc() - timedelta(seconds=1))

    response = post(world, "/v1/chat/completions", CHAT, issued.secret)

    assert_openai_error(response, 401, "key_expired")
    assert len(world.fake.records) == 1
    assert_books_clean()


def test_deleted_key_is_refused_and_its_unspent_cost_was_refunded(world: World) -> None:
    issued = world.key()
    assert post(world, "/v1/chat/completions", CHAT, issued.secret).status_code == 200
    wait_for(lambda: key_row(issued).client_spent_nanos > 0)
    balance = wallet_for_tenant(tenant=world.tenant).balance_nanos

    deleted = key_delete(tenant=world.tenant, actor=None, key_id=issued.key.pk)
    response = post(world, "/v1/chat/completions", CHAT, issued.secret)

    assert_openai_error(response, 401, "key_deleted")
    key = key_row(issued)
    assert deleted.refunded_nanos == 6 * USD - key.cost_spent_nanos
    assert wallet_for_tenant(tenant=world.tenant).balance_nanos == balance + deleted.refunded_nanos
    assert len(world.fake.records) == 1
    assert_books_clean()


def test_a_prepaid_key_deleted_mid_request_gets_back_what_its_hold_did_not_spend(
    world: World,
) -> None:
    """The request in flight is served and charged; deletion refunded the key's unspent
    cost but its hold, and settlement refunds what the hold did not spend."""
    from billing.models import Reservation

    issued = world.key()
    result: dict[str, Any] = {}

    def slow_answer() -> None:
        body = {"model": "slow-stream", "messages": PROMPT, "max_tokens": 50}
        result["response"] = post(world, "/v1/chat/completions", body, issued.secret)

    asking = threading.Thread(target=slow_answer)
    asking.start()
    try:
        wait_for(lambda: Reservation.objects.filter(client_key=issued.key).exists())
        deleted = key_delete(tenant=world.tenant, actor=None, key_id=issued.key.pk)
    finally:
        asking.join(20)

    assert result["response"].status_code == 200, result["response"].text
    held = Reservation.objects.get(client_key=issued.key)
    assert held.status == "settled"
    assert 0 < held.charged_cost_nanos < held.cost_nanos
    # The rest of the hold is refunded just after the answer, off its path.
    refunds = LedgerEntry.objects.filter(client_key=issued.key, kind="key_refund")
    wait_for(lambda: refunds.count() == 2)
    key = key_row(issued)
    assert deleted.refunded_nanos == key.cost_funded_nanos - held.cost_nanos
    assert key.cost_refunded_nanos == key.cost_funded_nanos - key.cost_spent_nanos
    assert sorted(refunds.values_list("amount_nanos", flat=True)) == sorted(
        [deleted.refunded_nanos, held.cost_nanos - held.charged_cost_nanos]
    )
    assert_books_clean()


# ---------------------------------------------------------------------------- the request itself


def test_disallowed_model_is_refused_with_403(world: World) -> None:
    issued = world.key(models=["gpt-fake"])

    response = post(world, "/v1/embeddings", {"model": "embed-fake", "input": "hi"}, issued.secret)

    assert_openai_error(response, 403, "model_not_allowed")
    trace = trace_for(response.headers["x-request-id"])
    assert (trace.status, trace.status_code, trace.model, trace.cost_nanos) == (
        "refused",
        403,
        "embed-fake",
        0,
    )
    assert world.fake.records == []
    assert_nothing_charged(issued)
    assert_books_clean()


def test_unknown_model_is_refused_with_404(world: World) -> None:
    issued = world.key()

    response = post(
        world, "/v1/chat/completions", {**CHAT, "model": "gpt-nonexistent"}, issued.secret
    )

    assert_openai_error(response, 404, "model_not_found")
    # A model of the other wire format is just as unknown here.
    response = post(world, "/v1/chat/completions", {**CHAT, "model": "claude-fake"}, issued.secret)
    assert_openai_error(response, 404, "model_not_found")
    assert world.fake.records == []
    assert_nothing_charged(issued)


def test_anthropic_route_refusals_use_the_anthropic_shape(world: World) -> None:
    issued = world.key(models=["claude-fake"])
    body = {"model": "claude-slow", "max_tokens": 10, "messages": PROMPT}

    response = post(
        world, "/v1/messages", body, issued.secret, **{"anthropic-version": "2023-06-01"}
    )

    assert response.status_code == 403
    assert response.json()["type"] == "error"
    assert response.json()["error"]["type"] == "permission_error"
    response = post(
        world, "/v1/messages", {**body, "model": "claude-fake", "max_tokens": None}, issued.secret
    )
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert world.fake.records == []


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b'{"model": "gpt-fake", "messages": [', "invalid_json"),
        (b'["not", "an", "object"]', "invalid_request"),
        (b'{"model": "gpt-fake"}', "invalid_request"),
        (b'{"model": "gpt-fake", "messages": [], "max_tokens": -5}', "invalid_request"),
    ],
    ids=["truncated-json", "not-an-object", "no-messages", "negative-max-tokens"],
)
def test_malformed_request_is_refused_with_400(world: World, body: bytes, code: str) -> None:
    issued = world.key()

    response = post(
        world, "/v1/chat/completions", body, issued.secret, **{"content-type": "application/json"}
    )

    assert_openai_error(response, 400, code)
    assert world.fake.records == []
    assert_nothing_charged(issued)


def test_body_larger_than_the_limit_is_refused_with_413(world: World) -> None:
    """The default limit (10 MiB) on the shared server; a small configured one is tested in
    test_server_settings.py."""
    issued = world.key()
    body = {**CHAT, "messages": [{"role": "user", "content": "x" * (10 * 1024 * 1024)}]}

    response = post(world, "/v1/chat/completions", body, issued.secret)

    assert_openai_error(response, 413, "request_too_large")
    assert world.fake.records == []
    assert_nothing_charged(issued)


# ---------------------------------------------------------------------------- money: 402


AFFORDABLE = re.compile(r"Set max_tokens to at most (\d+) to fit")


def affordable_from(response: httpx.Response) -> int:
    error = assert_openai_error(response, 402, "insufficient_budget")
    found = AFFORDABLE.search(error["message"])
    assert found, error["message"]
    return int(found.group(1))


def test_prepaid_key_that_cannot_cover_the_worst_case_gets_402_naming_what_fits(
    world: World,
) -> None:
    # $0.01 of client budget for $0.006: the input alone fits, 16,384 output tokens do not.
    issued = world.key(client_budget_nanos=10_000_000, your_cost_nanos=6_000_000)

    refused = post(world, "/v1/chat/completions", CHAT, issued.secret)
    fits = affordable_from(refused)

    assert 0 < fits < 16_384
    assert world.fake.records == []
    assert_nothing_charged(issued)
    # The figure is close to the limit (it leaves room for the max_tokens field the retry
    # adds to the body, ~10 tokens at these prices): a little more is refused, it is served.
    over = post(world, "/v1/chat/completions", {**CHAT, "max_tokens": fits + 20}, issued.secret)
    assert over.status_code == 402
    served = post(world, "/v1/chat/completions", {**CHAT, "max_tokens": fits}, issued.secret)
    assert served.status_code == 200, served.text
    seen = world.fake.last("gpt-fake")
    assert seen.body["max_tokens"] == fits
    expected = charge_seen(seen, GPT_PRICE)
    key = key_row(issued)
    assert (key.cost_spent_nanos, key.client_spent_nanos) == (
        expected.cost_nanos,
        expected.client_nanos,
    )
    assert key.client_spent_nanos <= key.client_budget_nanos
    assert trace_for(refused.headers["x-request-id"]).status_code == 402
    assert_books_clean()


def test_each_of_n_completions_may_use_the_whole_output_limit_so_the_hold_covers_all(
    world: World,
) -> None:
    """Chat's ``n`` asks for several completions, each bounded by max_tokens: a hold for
    one would let the others be served uncharged."""
    from billing.models import Reservation

    issued = world.key(client_budget_nanos=10_000_000, your_cost_nanos=6_000_000)
    fits_one = affordable_from(post(world, "/v1/chat/completions", CHAT, issued.secret))

    refused = post(world, "/v1/chat/completions", {**CHAT, "n": 4}, issued.secret)

    fits_each = affordable_from(refused)
    assert "over 4 completions" in refused.json()["error"]["message"]
    # The same budget, shared by four completions (give or take the field's own bytes).
    assert fits_each <= fits_one // 4 and fits_each >= fits_one // 4 - 5
    body = orjson.dumps({**CHAT, "n": 4, "max_tokens": fits_each})
    served = post(world, "/v1/chat/completions", body, issued.secret)
    assert served.status_code == 200, served.text
    held = Reservation.objects.get(request_id=served.headers["x-request-id"])
    worst = request_charge(
        Usage(input_tokens=input_token_bound(body), output_tokens=4 * fits_each),
        world.prices["gpt-fake@fake-openai"].as_prices(),
        issued.key.ratio,
    )
    assert (held.cost_nanos, held.client_nanos) == (worst.cost_nanos, worst.client_nanos)
    assert_books_clean()


@pytest.mark.parametrize("n", [0, -1, 129, "2", 1.5, True])
def test_an_invalid_n_is_refused_with_400(world: World, n: Any) -> None:
    issued = world.key()
    response = post(world, "/v1/chat/completions", {**CHAT, "n": n}, issued.secret)
    error = assert_openai_error(response, 400, "invalid_request")
    assert "'n'" in error["message"]
    assert world.fake.records == []
    assert_nothing_charged(issued)


def test_wallet_key_is_bounded_by_a_small_wallet(world: World) -> None:
    small, _ = reseller_open(email="small@example.com")
    wallet_credit(tenant=small, amount_nanos=5_000_000, reason="test funds")  # $0.005
    issued = world.key(tenant=small, funding="wallet")

    fits = affordable_from(post(world, "/v1/chat/completions", CHAT, issued.secret))
    assert (
        "wallet"
        in post(world, "/v1/chat/completions", CHAT, issued.secret).json()["error"]["message"]
    )
    served = post(world, "/v1/chat/completions", {**CHAT, "max_tokens": fits}, issued.secret)

    assert served.status_code == 200, served.text
    seen = world.fake.last("gpt-fake")
    expected = charge_seen(seen, GPT_PRICE, ratio=(1, 1))
    wallet = wallet_for_tenant(tenant=small)
    assert wallet.balance_nanos == 5_000_000 - expected.cost_nanos
    assert wallet.reserved_nanos == 0
    usage = LedgerEntry.objects.get(wallet=wallet, kind=LedgerEntry.Kind.USAGE)
    assert usage.amount_nanos == -expected.cost_nanos
    assert_books_clean()


def test_spend_cap_bounds_a_wallet_key(world: World) -> None:
    cap = 3_000_000  # $0.003 in client prices, per day
    issued = world.key(funding="wallet", spend_cap_nanos=cap, budget_period="daily")

    refused = post(world, "/v1/chat/completions", CHAT, issued.secret)
    fits = affordable_from(refused)
    assert "spend cap" in refused.json()["error"]["message"]
    served = post(world, "/v1/chat/completions", {**CHAT, "max_tokens": fits}, issued.secret)

    assert served.status_code == 200, served.text
    key = key_row(issued)
    assert 0 < key.period_client_spent_nanos <= cap
    assert key.period_client_spent_nanos == key.client_spent_nanos
    assert_books_clean()


def test_anthropic_402_uses_the_anthropic_shape(world: World) -> None:
    issued = world.key(client_budget_nanos=10_000_000, your_cost_nanos=6_000_000)
    body = {"model": "claude-fake", "max_tokens": 100_000, "messages": PROMPT}

    response = post(
        world, "/v1/messages", body, issued.secret, **{"anthropic-version": "2023-06-01"}
    )

    assert response.status_code == 402
    assert response.json()["error"]["type"] == "billing_error"
    assert "max_tokens" in response.json()["error"]["message"]
    assert world.fake.records == []


# ---------------------------------------------------------------------------- rate limits


def test_requests_over_the_rpm_limit_get_429_with_retry_after_and_ratelimit_headers(
    world: World,
) -> None:
    issued = world.key(rpm=2)

    first = post(world, "/v1/chat/completions", CHAT, issued.secret)
    second = post(world, "/v1/chat/completions", CHAT, issued.secret)
    third = post(world, "/v1/chat/completions", CHAT, issued.secret)

    assert (first.status_code, second.status_code) == (200, 200)
    assert first.headers["x-ratelimit-limit-requests"] == "2"
    assert first.headers["x-ratelimit-remaining-requests"] == "1"
    assert_openai_error(third, 429, "rate_limit_exceeded")
    assert int(third.headers["retry-after"]) >= 1
    assert third.headers["x-ratelimit-limit-requests"] == "2"
    assert third.headers["x-ratelimit-remaining-requests"] == "0"
    assert "x-ratelimit-reset-requests" in third.headers
    assert len(world.fake.records) == 2
    statuses = [t.status_code for t in traces_of(issued.key, 3)]
    assert sorted(statuses) == [200, 200, 429]
    assert_books_clean()


def test_a_key_refused_by_the_limiter_stops_reserving_until_its_retry_after(
    world: World,
) -> None:
    """Limits and reservation are asked at once, the hold handed back on a 429; after one
    429 the key asks the limiter first, so hammering past a limit costs no reservations."""
    from billing.models import Reservation

    issued = world.key(rpm=1)

    statuses = [post(world, "/v1/chat/completions", CHAT, issued.secret).status_code]
    statuses += [
        post(world, "/v1/chat/completions", CHAT, issued.secret).status_code for _ in range(5)
    ]

    assert statuses == [200, 429, 429, 429, 429, 429]
    holds = Reservation.objects.filter(client_key=issued.key)
    # The served request's, and the first refused one's (made early, handed back).
    assert sorted(holds.values_list("status", flat=True)) == ["released", "settled"]
    released = holds.get(status="released")
    assert (released.charged_cost_nanos, released.charged_client_nanos) == (0, 0)
    assert len(world.fake.records) == 1
    assert_books_clean()


def test_second_request_while_one_streams_at_max_concurrency_1_gets_429(world: World) -> None:
    issued = world.key(max_concurrency=1)
    opened = threading.Event()
    release = threading.Event()
    result: dict[str, Any] = {}

    def slow_stream() -> None:
        body = {"model": "slow-stream", "messages": PROMPT, "stream": True}
        headers = {"Authorization": f"Bearer {issued.secret}"}
        with httpx.stream(
            "POST", f"{world.url}/v1/chat/completions", json=body, headers=headers, timeout=20
        ) as r:
            result["status"] = r.status_code
            for _ in r.iter_raw():
                opened.set()
                if release.is_set():
                    break

    streaming = threading.Thread(target=slow_stream)
    streaming.start()
    try:
        assert opened.wait(10)
        refused = post(world, "/v1/chat/completions", CHAT, issued.secret)
    finally:
        release.set()
        streaming.join(10)

    assert result["status"] == 200
    assert_openai_error(refused, 429, "rate_limit_exceeded")
    assert int(refused.headers["retry-after"]) >= 1
    # The slot is handed back when the stream ends, however it ends.
    wait_for(lambda: len(traces_of_now(issued)) == 2)
    assert post(world, "/v1/chat/completions", CHAT, issued.secret).status_code == 200
    assert_books_clean()


def traces_of_now(issued: IssuedKey) -> list[Any]:
    from usage.models import Trace

    return list(Trace.objects.filter(client_key=issued.key))


def test_spent_daily_cap_resets_on_the_next_day(world: World) -> None:
    cap = 3_000_000
    issued = world.key(funding="wallet", spend_cap_nanos=cap, budget_period="daily")
    today = key_row(issued).period_index
    # Yesterday the key spent its whole cap (the row as the clock would have left it).
    ClientKey.objects.filter(pk=issued.key.pk).update(
        period_index=today - 1, period_client_spent_nanos=cap
    )

    served = post(world, "/v1/chat/completions", {**CHAT, "max_tokens": 5}, issued.secret)

    assert served.status_code == 200, served.text
    key = key_row(issued)
    assert key.period_index == today
    assert key.period_client_spent_nanos == key.client_spent_nanos > 0
    figures = httpx.get(
        f"{world.url}/v1/key", headers={"Authorization": f"Bearer {issued.secret}"}
    ).json()
    assert figures["budget"] == "0.003"
    assert figures["budget_period"] == "daily"
    assert figures["spent"] == usd(key.period_client_spent_nanos)
    assert figures["remaining"] == usd(cap - key.period_client_spent_nanos)
    assert_books_clean()

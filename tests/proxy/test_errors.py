"""What the real server answers on every surface under ``/v1/`` and ``/api/`` when the
request is wrong: JSON in that surface's error shape, never a server's plain text or
Django's HTML.

* The proxy's paths (``proxy.asgi.ROUTES``): a method the path does not serve is a 405 with
  ``Allow``; a body nested past what the parser reads is a 400; both in the wire's shape.
* Other ``/v1/`` paths reach Django, which answers an unknown one with a 404 in the
  proxy's shape, and the sub-account API's in the REST API's shape.
* The REST API and the sub-account API refuse deeply nested JSON with a 400 parse error
  (it was an HTML 500: RecursionError in the standard library's parser).
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import orjson
import pytest

from billing.models import LedgerEntry
from billing.services import reseller_open
from keys.models import ClientKey
from proxy.asgi import guarded
from tests.proxy.conftest import World, assert_nothing_charged, post

ANTHROPIC = {"anthropic-version": "2023-06-01"}
# Nested past any parser's patience: the proxy's (orjson) stops at 1,024 levels.
DEEP_ARRAYS = b"[" * 50_000 + b"]" * 50_000
DEEP_OBJECTS = b'{"a":' * 50_000 + b"1" + b"}" * 50_000
DEEP_IN_A_REQUEST = b'{"model": "gpt-fake", "messages": ' + DEEP_ARRAYS + b"}"

# Every proxy path with a method it does not serve, and the methods it does.
WRONG_METHODS = [
    ("GET", "/v1/chat/completions", "POST"),
    ("PUT", "/v1/chat/completions", "POST"),
    ("GET", "/v1/chat/completions/", "POST"),
    ("GET", "/v1/responses", "POST"),
    ("DELETE", "/v1/embeddings", "POST"),
    ("POST", "/v1/models", "GET"),
    ("DELETE", "/v1/models", "GET"),
    ("POST", "/v1/key", "GET"),
    ("PATCH", "/v1/key", "GET"),
]
ANTHROPIC_WRONG_METHODS = [
    ("GET", "/v1/messages", "POST"),
    ("PUT", "/v1/messages", "POST"),
    ("GET", "/v1/messages/count_tokens", "POST"),
]
UNKNOWN_PROXY_PATHS = [
    ("POST", "/v1/completions"),
    ("POST", "/v1/chat/completion"),
    ("POST", "/v1/chat"),
    ("GET", "/v1/engines"),
    ("POST", "/v1/audio/speech"),
    ("GET", "/v1"),
]


def request(world: World, method: str, path: str, **options: Any) -> httpx.Response:
    return httpx.request(method, f"{world.url}{path}", timeout=20, **options)


def openai_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json", response.text
    error = response.json()["error"]
    assert {"message", "type", "code"} <= set(error)
    assert error["code"] == code
    return error


def anthropic_error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json", response.text
    body = response.json()
    assert body["type"] == "error"
    assert {"type", "message"} <= set(body["error"])
    return body["error"]


def detail_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json", response.text
    body = response.json()
    assert set(body) == {"detail", "code"}
    assert body["code"] == code
    return body


@pytest.mark.parametrize(("method", "path", "allowed"), WRONG_METHODS)
def test_a_method_a_proxy_path_does_not_serve_is_a_405_in_the_openai_shape(
    world: World, method: str, path: str, allowed: str
) -> None:
    issued = world.key()

    response = request(world, method, path, headers={"Authorization": f"Bearer {issued.secret}"})

    error = openai_error(response, 405, "method_not_allowed")
    assert error["type"] == "invalid_request_error"
    assert response.headers["allow"] == allowed
    assert world.fake.records == []


@pytest.mark.parametrize(("method", "path", "allowed"), ANTHROPIC_WRONG_METHODS)
def test_a_method_an_anthropic_path_does_not_serve_is_a_405_in_the_anthropic_shape(
    world: World, method: str, path: str, allowed: str
) -> None:
    response = request(world, method, path, headers={"x-api-key": world.key().secret})

    anthropic_error(response, 405)
    assert response.headers["allow"] == allowed


def test_an_anthropic_caller_gets_a_405_on_models_in_its_shape(world: World) -> None:
    response = request(world, "POST", "/v1/models", headers=ANTHROPIC)

    anthropic_error(response, 405)
    assert response.headers["allow"] == "GET"


@pytest.mark.parametrize(("method", "path"), UNKNOWN_PROXY_PATHS)
def test_an_unknown_v1_path_is_a_404_in_the_openai_shape(
    world: World, method: str, path: str
) -> None:
    response = request(world, method, path, json={"model": "gpt-fake"})

    error = openai_error(response, 404, "not_found")
    assert error["type"] == "not_found_error"


def test_an_unknown_path_under_messages_is_a_404_in_the_anthropic_shape(world: World) -> None:
    response = request(world, "POST", "/v1/messages/batches", json={}, headers=ANTHROPIC)

    assert anthropic_error(response, 404)["type"] == "not_found_error"


@pytest.mark.parametrize(
    ("path", "shape"),
    [
        ("/v1/chat/completions", "openai"),
        ("/v1/embeddings", "openai"),
        ("/v1/responses", "openai"),
        ("/v1/messages", "anthropic"),
        ("/v1/messages/count_tokens", "anthropic"),
    ],
)
@pytest.mark.parametrize(
    "body", [DEEP_ARRAYS, DEEP_OBJECTS, DEEP_IN_A_REQUEST], ids=["arrays", "objects", "inside"]
)
def test_deeply_nested_json_on_a_proxy_path_is_a_400_and_charges_nothing(
    world: World, path: str, shape: str, body: bytes
) -> None:
    issued = world.key()

    response = post(world, path, body, issued.secret, **ANTHROPIC if shape == "anthropic" else {})

    if shape == "anthropic":
        assert anthropic_error(response, 400)["type"] == "invalid_request_error"
    else:
        openai_error(response, 400, "invalid_json")
    assert world.fake.records == []
    assert_nothing_charged(issued)


# ------------------------------------------------------ the REST APIs through the server


@pytest.fixture
def reseller_headers(world: World) -> dict[str, str]:
    _, token = reseller_open(email="errors@example.com")
    return {"Authorization": f"Bearer {token.secret}", "content-type": "application/json"}


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/api/v1/keys"),
        ("PATCH", "/api/v1/keys/1"),
        ("POST", "/api/v1/keys/1/top-up"),
        ("POST", "/v1/sub-accounts"),
        ("PATCH", "/v1/sub-accounts/1"),
    ],
)
@pytest.mark.parametrize("body", [DEEP_ARRAYS, DEEP_OBJECTS], ids=["arrays", "objects"])
def test_deeply_nested_json_on_the_rest_apis_is_a_400_parse_error(
    world: World, reseller_headers: dict[str, str], method: str, path: str, body: bytes
) -> None:
    keys, entries = ClientKey.objects.count(), LedgerEntry.objects.count()

    response = request(world, method, path, content=body, headers=reseller_headers)

    detail_error(response, 400, "parse_error")
    assert (ClientKey.objects.count(), LedgerEntry.objects.count()) == (keys, entries)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/v1/keys/-1"),
        ("DELETE", "/api/v1/keys/abc"),
        ("GET", "/api/v1/nope"),
        ("GET", "/v1/sub-accounts/abc"),
        ("GET", "/v1/usage/nope"),
    ],
)
def test_an_unknown_rest_api_path_is_a_404_in_the_rest_apis_shape(
    world: World, reseller_headers: dict[str, str], method: str, path: str
) -> None:
    response = request(world, method, path, headers=reseller_headers)

    detail_error(response, 404, "not_found")


# ------------------------------------------------------------- a handler that fails


def run_guarded(handler: Any, path: str, sent: list[dict[str, Any]]) -> None:
    async def send(message: dict[str, Any]) -> None:
        # As uvicorn does: one start per answer.
        if message["type"] == "http.response.start" and sent:
            raise RuntimeError("Expected ASGI message 'http.response.body'")
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": path, "headers": []}
    asyncio.run(guarded(handler, scope, None, send))


async def crashes_at_once(scope: Any, receive: Any, send: Any) -> None:
    raise RuntimeError("a bug")


async def crashes_mid_answer(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    raise RuntimeError("a bug")


@pytest.mark.parametrize(
    ("path", "shape"), [("/v1/chat/completions", "openai"), ("/v1/messages", "anthropic")]
)
def test_a_proxy_handler_that_fails_before_answering_gives_a_json_500(path: str, shape: str):
    sent: list[dict[str, Any]] = []

    run_guarded(crashes_at_once, path, sent)

    start, body = sent

    assert start["status"] == 500
    assert (b"content-type", b"application/json") in start["headers"]
    answer = orjson.loads(body["body"])
    if shape == "openai":
        assert answer["error"]["code"] == "server_error"
    else:
        assert answer["type"] == "error"
        assert answer["error"]["type"] == "api_error"
    assert b"a bug" not in body["body"]


def test_a_proxy_handler_that_fails_mid_answer_is_left_to_the_server():
    sent: list[dict[str, Any]] = []

    with pytest.raises(RuntimeError):
        run_guarded(crashes_mid_answer, "/v1/chat/completions", sent)

    assert [message["status"] for message in sent] == [200]

"""Every answer under ``/api/`` and ``/v1/`` is JSON in its surface's error shape, whatever
fails: an unknown path, a crash, a refusal Django raises itself. Django's own pages stay
for the other paths (the admin, the dashboard).

Shapes: ``{"detail", "code"}`` on the REST API and the sub-account API; the proxy's wire
format on the other ``/v1/`` paths (OpenAI's, Anthropic's under ``/v1/messages`` or with
``anthropic-version``). What the proxy's router answers itself (a wrong method on its
paths) is tested against the real server in ``tests/proxy/test_errors.py``.
"""

from __future__ import annotations

from typing import Any

import pytest
from rest_framework.test import APIClient

pytestmark = pytest.mark.usefixtures("api_throttle_reset")

# Under /api/ and the sub-account API: none of these is a route (a key or top-up id is a
# whole number).
REST_API_UNKNOWN = [
    ("get", "/api/v1/keys/-1"),
    ("get", "/api/v1/keys/abc"),
    ("get", "/api/v1/keys/1.5"),
    ("delete", "/api/v1/keys/-1"),
    ("patch", "/api/v1/keys/0x1"),
    ("post", "/api/v1/keys/-1/top-up"),
    ("get", "/api/v1/keys/1/nope"),
    ("get", "/api/v1/key"),
    ("get", "/api/v1/keys/"),
    ("get", "/api/v1/wallet/top-ups/abc"),
    ("get", "/api/v2/keys"),
    ("get", "/api/"),
    ("get", "/api"),
    ("get", "/v1/sub-accounts/abc"),
    ("delete", "/v1/sub-accounts/-1"),
    ("get", "/v1/sub-accounts/1/nope"),
    ("get", "/v1/usage/by-model"),
    ("get", "/v1/usage"),
]
# Other /v1/ paths the proxy's router does not take: the proxy's wire shape.
PROXY_UNKNOWN = [
    ("post", "/v1/completions"),
    ("post", "/v1/chat/completion"),
    ("get", "/v1/chat/completions"),  # through the real server, its router answers 405
    ("post", "/v1/images/generations"),
    ("get", "/v1/nope"),
    ("get", "/v1/"),
    ("get", "/v1"),
    ("get", "/v1/sub-accounts-old"),
]
ANTHROPIC_UNKNOWN = [
    ("post", "/v1/messages/batches"),
    ("get", "/v1/messages"),
    ("post", "/v1/messages/count_token"),
]


def detail_shape(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.content
    assert response["Content-Type"] == "application/json", response.content
    body = response.json()
    assert set(body) == {"detail", "code"}, body
    assert body["code"] == code, body
    assert isinstance(body["detail"], str) and body["detail"], body
    return body


def openai_shape(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.content
    assert response["Content-Type"] == "application/json", response.content
    error = response.json()["error"]
    assert {"message", "type", "code"} <= set(error), error
    assert error["code"] == code, error
    return error


def anthropic_shape(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.content
    assert response["Content-Type"] == "application/json", response.content
    body = response.json()
    assert body["type"] == "error", body
    assert {"type", "message"} <= set(body["error"]), body
    return body["error"]


@pytest.mark.parametrize(("method", "path"), REST_API_UNKNOWN)
def test_an_unknown_rest_api_path_is_a_json_404(api, method, path):
    body = detail_shape(getattr(api, method)(path), 404, "not_found")

    assert path in body["detail"]


@pytest.mark.parametrize(("method", "path"), REST_API_UNKNOWN[:3])
def test_an_unknown_rest_api_path_is_a_json_404_without_a_token_too(method, path):
    detail_shape(getattr(APIClient(), method)(path), 404, "not_found")


@pytest.mark.parametrize(("method", "path"), PROXY_UNKNOWN)
def test_an_unknown_proxy_path_is_a_404_in_the_openai_shape(api, method, path):
    error = openai_shape(getattr(api, method)(path), 404, "not_found")

    assert error["type"] == "not_found_error"


@pytest.mark.parametrize(("method", "path"), ANTHROPIC_UNKNOWN)
def test_an_unknown_path_under_messages_is_a_404_in_the_anthropic_shape(api, method, path):
    error = anthropic_shape(getattr(api, method)(path), 404)

    assert error["type"] == "not_found_error"


def test_an_anthropic_caller_gets_the_anthropic_shape_anywhere_under_v1(api):
    response = api.post("/v1/complete", HTTP_ANTHROPIC_VERSION="2023-06-01")

    anthropic_shape(response, 404)


@pytest.mark.parametrize("path", ["/nope", "/dashboard/nope/", "/apiv1/keys", "/v1x/chat"])
def test_other_paths_keep_djangos_own_404_page(client, path):
    response = client.get(path)

    assert response.status_code == 404
    assert response["Content-Type"].startswith("text/html")


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("put", "/api/v1/keys"),
        ("post", "/api/v1/wallet"),
        ("delete", "/api/v1/earnings"),
        ("put", "/v1/sub-accounts/1"),
        ("post", "/v1/usage/by-tag"),
        ("post", "/api/v1/schema/"),
    ],
)
def test_a_method_a_rest_api_path_does_not_serve_is_a_json_405_with_allow(api, method, path):
    response = getattr(api, method)(path)

    detail_shape(response, 405, "method_not_allowed")
    assert response["Allow"]


@pytest.mark.parametrize(
    ("client_kind", "status", "code"),
    [("none", 401, "not_authenticated"), ("bad", 401, "authentication_failed")],
)
def test_drfs_own_errors_carry_a_code(client_kind, status, code):
    client = APIClient()
    if client_kind == "bad":
        client.credentials(HTTP_AUTHORIZATION="Bearer tgr-nope")

    detail_shape(client.get("/api/v1/wallet"), status, code)


def test_a_body_that_is_not_json_is_a_400_parse_error(api):
    response = api.post("/api/v1/keys", b"{", content_type="application/json")

    detail_shape(response, 400, "parse_error")


def test_a_body_in_another_media_type_is_a_415_with_a_code(api):
    response = api.post("/api/v1/keys", "label=x", content_type="application/x-www-form-urlencoded")

    detail_shape(response, 415, "unsupported_media_type")


def test_a_bad_host_under_the_api_is_a_json_400(api):
    response = api.get("/api/v1/wallet", HTTP_HOST="evil.example.com")

    detail_shape(response, 400, "bad_request")


# ------------------------------------------------------------------ crashes and refusals


@pytest.fixture
def failing_site(settings, client):
    """The site with views that fail on purpose (``tests.error_urls``), answered as in
    production: DEBUG off, a crash answered by ``handler500`` instead of re-raised."""
    settings.ROOT_URLCONF = "tests.error_urls"
    settings.DEBUG = False
    client.raise_request_exception = False
    return client


@pytest.mark.parametrize("path", ["/api/v1/crash", "/api/v1/plain-crash", "/v1/sub-accounts/crash"])
def test_a_crash_under_the_rest_api_is_a_json_500(failing_site, path):
    body = detail_shape(failing_site.get(path), 500, "server_error")

    assert "a bug" not in body["detail"]  # nothing of the exception leaks


def test_a_crash_under_v1_is_a_500_in_the_openai_shape(failing_site):
    openai_shape(failing_site.get("/v1/crash"), 500, "server_error")


def test_a_crash_under_messages_is_a_500_in_the_anthropic_shape(failing_site):
    error = anthropic_shape(failing_site.get("/v1/messages/crash"), 500)

    assert error["type"] == "api_error"


def test_a_refusal_django_raises_under_the_api_is_json(failing_site):
    detail_shape(failing_site.get("/api/v1/forbidden"), 403, "permission_denied")
    openai_shape(failing_site.get("/v1/forbidden"), 403, "permission_denied")


def test_a_crash_elsewhere_keeps_djangos_own_pages(failing_site):
    crashed = failing_site.get("/crash")
    refused = failing_site.get("/forbidden")

    assert crashed.status_code == 500
    assert crashed["Content-Type"].startswith("text/html")
    assert refused.status_code == 403
    assert refused["Content-Type"].startswith("text/html")

"""The API reference at ``/api/v1/docs/``: Swagger UI over the schema, its files served
from here (drf-spectacular-sidecar), an HTML page under the strict Content-Security-Policy
(its start-up script from a URL, not inline). In a real browser:
tests/serve/test_front_browser.py."""

from __future__ import annotations

import re

from django.contrib.staticfiles import finders
from django.test import Client

from tests.test_security_headers import POLICY, blocked_inline, directives

DOCS_URL = "/api/v1/docs/"


def test_the_docs_are_an_html_page_whose_assets_are_served_from_here(db: None) -> None:
    response = Client().get(DOCS_URL)
    assert response.status_code == 200
    assert response["Content-Type"] == "text/html; charset=utf-8"
    html = response.content.decode()
    assert "<title>Tollgate API reference</title>" in html
    sources = re.findall(r'(?:src|href)="([^"]+)"', html)
    assets = [s for s in sources if s.startswith("/static/")]
    assert {a.rsplit("/", 1)[1] for a in assets} >= {
        "swagger-ui.css",
        "swagger-ui-bundle.js",
        "swagger-ui-standalone-preset.js",
        "docs.css",
    }
    # Nothing from another origin: every asset is a file of this server's static files.
    assert not [s for s in sources if "//" in s]
    for asset in assets:
        assert finders.find(asset.removeprefix("/static/")), asset
    assert "/api/v1/schema/" in html  # the link to the schema itself


def test_the_docs_keep_to_the_policy_with_data_images_only_added(db: None) -> None:
    response = Client().get(DOCS_URL)
    # Swagger UI's stylesheet draws its icons as data: images; nothing else is loosened.
    assert directives(response["Content-Security-Policy"]) == {
        **POLICY,
        "img-src": "'self' data:",
    }
    assert blocked_inline(response.content.decode()) == []
    assert directives(Client().get("/api/v1/schema/")["Content-Security-Policy"]) == POLICY


def test_the_start_up_script_comes_from_its_own_url(db: None) -> None:
    html = Client().get(DOCS_URL).content.decode()
    (script_url,) = re.findall(r'<script src="(/api/v1/docs/\?[^"]*)"', html)
    script = Client().get(script_url.replace("&amp;", "&"))
    assert script.status_code == 200
    assert script["Content-Type"].startswith("application/javascript")
    body = script.content.decode()
    assert "SwaggerUIBundle(" in body and 'url: "/api/v1/schema/"' in body


def test_docs_errors_answer_in_json_like_the_rest_of_the_api(db: None) -> None:
    response = Client().post(DOCS_URL)
    assert response.status_code == 405
    assert response.json() == {
        "detail": 'Method "POST" not allowed.',
        "code": "method_not_allowed",
    }


def test_the_docs_page_is_not_an_operation_of_the_schema(db: None) -> None:
    schema = Client().get("/api/v1/schema/", {"format": "json"}).json()
    assert "/api/v1/docs/" not in schema["paths"]
    assert "reseller API token" in schema["info"]["description"]

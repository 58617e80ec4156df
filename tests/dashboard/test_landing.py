"""The front page at ``/``: what Tollgate is and the three ways in, for anyone, under the
strict Content-Security-Policy. (In a real browser, at 1280 and 390 px wide:
tests/serve/test_front_browser.py.)"""

from __future__ import annotations

from html.parser import HTMLParser

from django.test import Client

from tests.test_security_headers import POLICY, blocked_inline, directives


class Links(HTMLParser):
    """Each link's text and where it goes."""

    def __init__(self) -> None:
        super().__init__()
        self.links: dict[str, str] = {}
        self._href: str | None = None
        self._text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self._href = dict(attrs).get("href") or ""
            self._text = []

    def handle_data(self, data: str) -> None:
        if self._href is not None:
            self._text.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "a" and self._href is not None:
            self.links[" ".join("".join(self._text).split())] = self._href
            self._href = None


def links(html: str) -> dict[str, str]:
    parser = Links()
    parser.feed(html)
    return parser.links


def test_the_front_page_says_what_tollgate_is_and_links_the_ways_in(db: None) -> None:
    response = Client().get("/")
    assert response.status_code == 200
    assert response["Content-Type"] == "text/html; charset=utf-8"
    html = response.content.decode()
    assert "Resell LLM API access" in html
    found = links(html)
    assert found["Sign in"] == "/dashboard/sign-in/"
    assert found["Client portal"] == "/portal/"
    assert found["API reference"] == "/api/v1/docs/"
    # Where the SDKs point, as this visitor reached the server.
    assert "<code>http://testserver/v1</code>" in html
    assert "<code>http://testserver</code>" in html


def test_the_front_page_has_no_dashboard_navigation_even_when_signed_in(
    client: Client, tenant: object
) -> None:
    from accounts.models import Tenant

    assert isinstance(tenant, Tenant)
    client.force_login(tenant.owner)
    html = client.get("/").content.decode()
    assert "/dashboard/keys/" not in html and "Sign out" not in html


def test_the_front_page_keeps_to_the_policy(db: None) -> None:
    response = Client().get("/")
    assert directives(response["Content-Security-Policy"]) == POLICY
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["X-Frame-Options"] == "DENY"
    assert blocked_inline(response.content.decode()) == []


def test_the_front_page_only_answers_reads(db: None) -> None:
    assert Client().post("/").status_code == 405
    assert Client().head("/").status_code == 200

"""Browser security headers on Django's responses, and the admin under the strict CSP.

The policy forbids inline script and style: every admin page the operator can open is
rendered here and its HTML searched for anything the policy would block (a real browser
loads a set of them too: tests/serve/test_admin_browser.py)."""

from __future__ import annotations

from html.parser import HTMLParser

import pytest
from django.contrib import admin
from django.test import Client
from django.urls import NoReverseMatch, reverse

from billing.selectors import wallet_for_tenant
from keys.services import key_create

POLICY = {
    "default-src": "'self'",
    "script-src": "'self'",
    "style-src": "'self'",
    "object-src": "'none'",
    "base-uri": "'self'",
    "form-action": "'self'",
    "frame-ancestors": "'none'",
}


def directives(header: str) -> dict[str, str]:
    parts = (part.strip().split(None, 1) for part in header.split(";") if part.strip())
    return {name: value for name, value in parts}


class InlineFinder(HTMLParser):
    """What a policy without 'unsafe-inline' blocks: inline scripts, event-handler
    attributes, javascript: URLs, style attributes and <style> elements."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []
        self._in_inline_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        named = dict(attrs)
        if tag == "script" and "src" not in named:
            if named.get("type") not in ("application/json", "application/ld+json"):
                self._in_inline_script = True
        if tag == "style":
            self.found.append("<style>")
        for name, value in attrs:
            if name.startswith("on"):
                self.found.append(f"{tag} {name}=")
            if name == "style":
                self.found.append(f"{tag} style={value!r}")
            if name in ("href", "src", "action") and (value or "").strip().lower().startswith(
                "javascript:"
            ):
                self.found.append(f"{tag} {name}={value!r}")

    def handle_data(self, data: str) -> None:
        if self._in_inline_script and data.strip():
            self.found.append(f"<script>{data.strip()[:60]}")

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_inline_script = False


def blocked_inline(html: str) -> list[str]:
    finder = InlineFinder()
    finder.feed(html)
    return finder.found


def test_admin_login_page_carries_every_header(client):
    response = client.get(reverse("admin:login"))
    assert response.status_code == 200
    assert directives(response["Content-Security-Policy"]) == POLICY
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Referrer-Policy"] == "same-origin"
    assert response["X-Frame-Options"] == "DENY"
    assert response["Cross-Origin-Opener-Policy"] == "same-origin"
    # Plain HTTP: no HSTS (a browser would ignore it, and it must not pin a dev host).
    assert "Strict-Transport-Security" not in response


def test_the_rest_api_answers_carry_the_policy_too(api, api_throttle_reset):
    response = api.get("/api/v1/wallet")
    assert response.status_code == 200
    assert directives(response["Content-Security-Policy"]) == POLICY
    assert response["X-Content-Type-Options"] == "nosniff"


def test_hsts_is_sent_on_https_with_the_configured_options(client, settings):
    response = client.get(reverse("admin:login"), secure=True)
    assert response["Strict-Transport-Security"] == "max-age=31536000"

    settings.SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    settings.SECURE_HSTS_PRELOAD = True
    # A new client: the middleware reads its settings when the handler is built.
    response = Client().get(reverse("admin:login"), secure=True)
    assert response["Strict-Transport-Security"] == ("max-age=31536000; includeSubDomains; preload")


@pytest.mark.django_db
def test_no_admin_page_has_inline_script_or_style(
    admin_client, reseller, price, books_balance, make_reseller
):
    tenant, _ = make_reseller(balance="50")
    key_create(
        tenant=tenant,
        actor=None,
        label="k",
        client_budget_nanos=10_000_000_000,
        your_cost_nanos=6_000_000_000,
    )
    wallet = wallet_for_tenant(tenant=tenant)
    pages = [reverse("admin:login"), reverse("admin:billing_wallet_credit", args=[wallet.pk])]
    for model in admin.site._registry:
        opts = model._meta
        prefix = f"admin:{opts.app_label}_{opts.model_name}"
        pages += [reverse(f"{prefix}_changelist"), reverse(f"{prefix}_add")]
        row = model._default_manager.order_by("pk").first()
        if row is not None:
            pages += [
                reverse(f"{prefix}_change", args=[row.pk]),
                reverse(f"{prefix}_history", args=[row.pk]),
            ]
            try:
                pages.append(reverse(f"{prefix}_delete", args=[row.pk]))
            except NoReverseMatch:
                pass
    pages += [reverse("admin:index"), reverse("admin:password_change")]

    rendered = 0
    for page in pages:
        response = admin_client.get(page)
        if response.status_code != 200:  # add or delete refused by design (403), say
            assert response.status_code in (302, 403), (page, response.status_code)
            continue
        rendered += 1
        assert "Content-Security-Policy" in response, page
        assert blocked_inline(response.content.decode()) == [], page
    assert rendered >= 30, rendered


def test_the_search_finds_what_the_policy_blocks():
    html = """
        <script src="/static/a.js"></script><script type="application/json">{"a": 1}</script>
        <script>alert(1)</script><div style="color: red" onclick="go()"></div>
        <a href="javascript:go()">x</a><style>p {}</style>
    """
    assert blocked_inline(html) == [
        "<script>alert(1)",
        "div style='color: red'",
        "div onclick=",
        "a href='javascript:go()'",
        "<style>",
    ]

"""The API tokens and settings pages through the Django client: the same services as the
REST API (a token made here works there, a revoked one stops; settings saved here are what
``GET /api/v1/account`` answers, refused by the same rules), another tenant's token id is a
404 that changes nothing, and every form needs its CSRF token."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.test import Client
from rest_framework.test import APIClient

from accounts.models import ApiToken, Tenant
from accounts.services import api_token_create
from tests.dashboard.conftest import sign_in

pytestmark = pytest.mark.usefixtures("api_throttle_reset")


def bearer(secret: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    return client


def csrf_client(tenant: Tenant, url: str) -> tuple[Client, str]:
    """A client that enforces CSRF checks, and the token its form page gave it."""
    client = sign_in(tenant, enforce_csrf_checks=True)
    page = client.get(url).content.decode()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)
    assert token is not None
    return client, token[1]


# --------------------------------------------------------------------------------- tokens


def test_the_tokens_page_lists_the_tenants_tokens_only(tenant: Tenant, outsider: Any) -> None:
    api_token_create(tenant=tenant, name="billing-sync")
    theirs = api_token_create(tenant=outsider[0], name="their-script")

    response = sign_in(tenant).get("/dashboard/tokens/")
    html = response.content.decode()

    assert response.status_code == 200
    assert [t.name for t in response.context["tokens"]] == ["billing-sync", "default"]
    assert "billing-sync" in html and "their-script" not in html
    assert theirs.token.prefix not in html
    assert html.count("badge-good") == 2


def test_a_new_tokens_secret_is_shown_once_and_works(tenant: Tenant, outsider: Any) -> None:
    page = sign_in(tenant)

    response = page.post("/dashboard/tokens/", {"name": "ci"})

    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    secret = response.context["issued"].secret
    html = response.content.decode()
    assert f'<p class="secret" id="new-token-secret">{secret}</p>' in html
    assert 'data-copy="#new-token-secret"' in html
    assert bearer(secret).get("/api/v1/account").json()["id"] == tenant.pk
    again = page.get("/dashboard/tokens/").content.decode()
    assert secret not in again and "ci" in again
    assert ApiToken.objects.get(tenant=tenant, name="ci").digest != secret


def test_a_token_needs_a_name(tenant: Tenant) -> None:
    page = sign_in(tenant)
    before = ApiToken.objects.count()

    blank = page.post("/dashboard/tokens/", {"name": "  "})
    long = page.post("/dashboard/tokens/", {"name": "x" * 101})

    assert (blank.status_code, long.status_code) == (400, 400)
    assert "This field is required." in blank.content.decode()
    assert "at most 100 characters" in long.content.decode()
    assert ApiToken.objects.count() == before


def test_revoking_asks_first_then_the_token_stops_working(tenant: Tenant, outsider: Any) -> None:
    issued = api_token_create(tenant=tenant, name="leaked")
    page = sign_in(tenant)
    url = f"/dashboard/tokens/{issued.token.pk}/revoke/"

    confirm = page.get(url)
    assert confirm.status_code == 200
    assert "Revoke the token “leaked”?" in confirm.content.decode()
    assert bearer(issued.secret).get("/api/v1/account").status_code == 200

    done = page.post(url, follow=True)

    assert done.redirect_chain == [("/dashboard/tokens/", 302)]
    assert "The token leaked is revoked" in done.content.decode()
    assert bearer(issued.secret).get("/api/v1/account").status_code == 401
    revoked_at = ApiToken.objects.get(pk=issued.token.pk).revoked_at
    assert revoked_at is not None

    twice = page.post(url, follow=True)
    assert "already revoked" in twice.content.decode()
    assert ApiToken.objects.get(pk=issued.token.pk).revoked_at == revoked_at


@pytest.mark.parametrize("method", ["get", "post"])
def test_another_tenants_token_is_404_and_untouched(
    tenant: Tenant, outsider: Any, method: str
) -> None:
    theirs = api_token_create(tenant=outsider[0], name="theirs")
    page = sign_in(tenant)

    response = getattr(page, method)(f"/dashboard/tokens/{theirs.token.pk}/revoke/")

    assert response.status_code == 404
    assert ApiToken.objects.get(pk=theirs.token.pk).revoked_at is None
    assert bearer(theirs.secret).get("/api/v1/account").status_code == 200


# ------------------------------------------------------------------------------- settings


def test_settings_save_what_the_api_answers(tenant: Tenant, api: Any) -> None:
    page = sign_in(tenant)
    form = page.get("/dashboard/settings/").content.decode()
    assert 'name="display_name"' in form and f'value="{tenant.name}"' in form
    assert '<option value="Asia/Kolkata">Asia/Kolkata</option>' in form
    assert '<option value="UTC" selected>UTC</option>' in form
    assert "client portal" in form and "statements" in form

    response = page.post(
        "/dashboard/settings/",
        {
            "display_name": "  Acme Reseller ",
            "support_email": "help@acme.example",
            "timezone": "Asia/Kolkata",
        },
        follow=True,
    )

    assert response.redirect_chain == [("/dashboard/settings/", 302)]
    assert "Settings saved." in response.content.decode()
    account = api.get("/api/v1/account").json()
    assert (account["display_name"], account["support_email"], account["timezone"]) == (
        "Acme Reseller",
        "help@acme.example",
        "Asia/Kolkata",
    )
    assert '<option value="Asia/Kolkata" selected>' in response.content.decode()


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("support_email", "not-an-email"),
        ("timezone", "Mars/Olympus_Mons"),
        ("display_name", "   "),
    ],
)
def test_settings_refuse_what_the_api_refuses(
    tenant: Tenant, api: Any, field: str, value: str
) -> None:
    valid = {"display_name": "Acme", "support_email": "", "timezone": "UTC"}
    before = api.get("/api/v1/account").json()

    response = sign_in(tenant).post("/dashboard/settings/", {**valid, field: value})
    refused = api.patch("/api/v1/account", {field: value}, format="json")

    assert response.status_code == 400
    assert refused.status_code == 400
    errors = response.context["form"].errors
    assert list(errors) == [field]
    if field != "display_name":  # the form says a blank name is missing, the API that it is blank
        assert errors[field] == refused.json()[field]
    assert api.get("/api/v1/account").json() == before


# ----------------------------------------------------------------------------- CSRF


@pytest.mark.parametrize(
    ("url", "data"),
    [
        ("/dashboard/tokens/", {"name": "csrf"}),
        ("/dashboard/tokens/{token}/revoke/", {}),
        ("/dashboard/settings/", {"display_name": "x", "support_email": "", "timezone": "UTC"}),
    ],
)
def test_every_form_needs_its_csrf_token(tenant: Tenant, url: str, data: dict[str, str]) -> None:
    token = api_token_create(tenant=tenant, name="kept").token
    url = url.format(token=token.pk)
    tokens_before = ApiToken.objects.filter(tenant=tenant, revoked_at__isnull=True).count()
    name_before = tenant.name
    client, csrf = csrf_client(tenant, "/dashboard/tokens/" if "{" not in url else url)

    refused = client.post(url, data)
    assert refused.status_code == 403
    assert ApiToken.objects.filter(tenant=tenant, revoked_at__isnull=True).count() == tokens_before
    tenant.refresh_from_db()
    assert tenant.name == name_before

    accepted = client.post(url, {**data, "csrfmiddlewaretoken": csrf})
    assert accepted.status_code in (200, 302)


@pytest.mark.parametrize(
    "url", ["/dashboard/tokens/", "/dashboard/tokens/1/revoke/", "/dashboard/settings/"]
)
def test_a_signed_out_visitor_changes_nothing(tenant: Tenant, url: str) -> None:
    page = sign_in(tenant)
    page.post("/dashboard/sign-out/")
    tokens_before = list(ApiToken.objects.values_list("pk", "revoked_at"))

    response = page.post(url, {"name": "x", "display_name": "x", "timezone": "UTC"})

    assert response.status_code == 302
    assert response["Location"].startswith("/dashboard/sign-in/")
    assert list(ApiToken.objects.values_list("pk", "revoked_at")) == tokens_before
    tenant.refresh_from_db()
    assert tenant.name != "x"

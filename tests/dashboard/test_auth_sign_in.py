"""Signing in to the dashboard: the email in any case, failures throttled by django-axes
with a page that says so, and CSRF on every account form."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from axes.models import AccessAttempt
from django.contrib.auth import get_user_model
from django.core import mail
from django.test import Client

from accounts.models import Tenant
from accounts.services import IssuedToken, user_password_ensure
from billing.services import reseller_open
from tests.dashboard.auth_support import (
    LIMIT,
    NEW_PASSWORD,
    PASSWORD,
    auth_settings,  # noqa: F401 - the fixture
    links_in,
    path_of,
)

pytestmark = pytest.mark.usefixtures("auth_settings")


@pytest.fixture
def bob(db: None) -> Tenant:
    """A reseller whose email was typed with capitals when the account was made."""
    tenant, _ = reseller_open(email="Bob.Smith@Example.COM", password=PASSWORD)
    return tenant


def sign_in(email: str, password: str, client: Client | None = None, **extra: str):
    client = client or Client()
    return client.post("/dashboard/sign-in/", {"username": email, "password": password, **extra})


def test_the_email_matches_whatever_its_case(bob: Tenant) -> None:
    assert bob.owner.username == "Bob.Smith@example.com"
    for typed in ("bob.smith@example.com", "BOB.SMITH@EXAMPLE.COM", " Bob.Smith@example.com "):
        response = sign_in(typed, PASSWORD)
        assert response.status_code == 302, typed
        assert response["Location"] == "/dashboard/"


def test_signing_in_goes_to_next_on_this_site_only(bob: Tenant) -> None:
    response = sign_in("bob.smith@example.com", PASSWORD, next="/dashboard/security/")
    assert response["Location"] == "/dashboard/security/"
    response = sign_in("bob.smith@example.com", PASSWORD, next="https://evil.example/")
    assert response["Location"] == "/dashboard/"


def test_failures_add_up_whatever_the_case_and_lock_with_a_page(bob: Tenant) -> None:
    for typed in ("bob.smith@example.com", "BOB.SMITH@example.com", "Bob.Smith@EXAMPLE.com"):
        sign_in(typed, "wrong-password", Client(REMOTE_ADDR=f"203.0.113.{len(typed)}"))
    assert set(AccessAttempt.objects.values_list("username", flat=True)) == {
        "bob.smith@example.com"
    }

    # Locked: the right password, from another address, gets the page (and still a 429).
    response = sign_in("bob.smith@example.com", PASSWORD, Client(REMOTE_ADDR="192.0.2.1"))
    assert response.status_code == 429
    assert response["Retry-After"] == str(15 * 60)
    assert response["Content-Type"].startswith("text/html")
    page = response.content.decode()
    assert "Too many failed sign-ins" in page
    assert "15 minutes" in page
    assert 'href="/dashboard/password-reset/"' in page
    assert "default-src 'self'" in response["Content-Security-Policy"]


def test_the_admin_login_keeps_its_plain_answer_to_a_lockout(bob: Tenant) -> None:
    for _ in range(LIMIT):
        Client().post("/admin/login/", {"username": "bob.smith@example.com", "password": "x"})
    response = Client().post(
        "/admin/login/", {"username": "bob.smith@example.com", "password": PASSWORD}
    )
    assert response.status_code == 429
    assert response["Content-Type"].startswith("text/plain")


def test_resetting_the_password_by_email_lifts_the_accounts_lock(bob: Tenant) -> None:
    # Bob's account is locked by guesses from several addresses; one address is locked by
    # its guesses at other accounts.
    for number in range(LIMIT):
        sign_in("bob.smith@example.com", "wrong", Client(REMOTE_ADDR=f"198.51.100.{number}"))
        sign_in(f"victim{number}@example.com", "wrong", Client(REMOTE_ADDR="203.0.113.5"))
    assert sign_in("bob.smith@example.com", PASSWORD).status_code == 429

    client = Client()
    client.post("/dashboard/password-reset/", {"email": "bob.smith@example.com"})
    (link,) = links_in(mail.outbox[-1])
    form = client.get(path_of(link), follow=True)
    client.post(
        form.redirect_chain[-1][0],
        {"new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD},
    )
    assert sign_in("bob.smith@example.com", NEW_PASSWORD).status_code == 302
    # Only Bob's failures are forgotten: the address that guessed at others stays locked.
    assert sign_in("x@example.com", "y", Client(REMOTE_ADDR="203.0.113.5")).status_code == 429


def test_an_inactive_account_is_refused_like_a_wrong_password(bob: Tenant) -> None:
    get_user_model().objects.filter(pk=bob.owner_id).update(is_active=False)
    response = sign_in("bob.smith@example.com", PASSWORD)
    assert response.status_code == 200
    assert "Enter the correct email and password" in response.content.decode()


def test_the_sign_in_page_links_to_a_reset_and_labels_its_fields(db: None) -> None:
    page = Client().get("/dashboard/sign-in/").content.decode()
    assert '<label for="id_username">Email</label>' in page
    assert '<label for="id_password">Password</label>' in page
    assert 'href="/dashboard/password-reset/"' in page


# ---------------------------------------------------------------------------- CSRF

ANONYMOUS_FORMS = [
    "/dashboard/sign-in/",
    "/dashboard/sign-up/",
    "/dashboard/verify-email/",
    "/dashboard/verify-email/some-token/",
    "/dashboard/password-reset/",
    "/dashboard/password-reset/MQ/set-password/",
]
SIGNED_IN_FORMS = [
    "/dashboard/sign-out/",
    "/dashboard/sign-in/code/",
    "/dashboard/security/password/",
    "/dashboard/security/two-factor/start/",
    "/dashboard/security/two-factor/",
    "/dashboard/security/two-factor/off/",
    "/dashboard/security/backup-codes/",
]


@pytest.mark.parametrize("path", ANONYMOUS_FORMS)
def test_every_visitors_form_needs_the_csrf_token(db: None, path: str) -> None:
    response = Client(enforce_csrf_checks=True).post(path, {"email": "a@example.com"})
    assert response.status_code == 403


@pytest.mark.parametrize("path", SIGNED_IN_FORMS)
def test_every_signed_in_form_needs_the_csrf_token(
    make_reseller: Callable[..., tuple[Tenant, IssuedToken]], path: str
) -> None:
    tenant, _ = make_reseller()
    user_password_ensure(user=tenant.owner, password=PASSWORD)
    client = Client(enforce_csrf_checks=True)
    client.force_login(tenant.owner)
    response = client.post(path, {"old_password": PASSWORD, "code": "123456"})
    assert response.status_code == 403
    # Nothing happened: still signed in, no device started.
    assert client.get("/dashboard/").status_code == 200
    from accounts.models import AuthenticatorDevice

    assert not AuthenticatorDevice.objects.exists()


def test_a_form_with_its_token_goes_through(bob: Tenant) -> None:
    from tests.dashboard.auth_support import csrf_token

    client = Client(enforce_csrf_checks=True)
    token = csrf_token(client, "/dashboard/sign-in/")
    response = client.post(
        "/dashboard/sign-in/",
        {"username": "bob.smith@example.com", "password": PASSWORD, "csrfmiddlewaretoken": token},
    )
    assert response.status_code == 302

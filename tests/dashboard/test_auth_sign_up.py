"""Signing up on the dashboard: an account that works once its email is verified, a wallet
from the start, and an answer that never tells whether an address has an account."""

from __future__ import annotations

import re
import time
from collections.abc import Callable

import pytest
from django.contrib.auth import get_user_model
from django.core import mail
from django.test import Client
from pytest_django.fixtures import Settings

from accounts.models import ApiToken, SignUp, Tenant
from accounts.services import IssuedToken, user_password_ensure
from billing.models import Wallet
from tests.dashboard.auth_support import (
    PASSWORD,
    auth_settings,  # noqa: F401 - the fixture
    links_in,
    path_of,
)

pytestmark = pytest.mark.usefixtures("auth_settings")

NEW = "New.Reseller@Example.com"


def sign_up(client: Client, email: str = NEW, password: str = PASSWORD, **extra: str):
    return client.post(
        "/dashboard/sign-up/", {"email": email, "password": password, "display_name": "", **extra}
    )


def same_page(page: str, email: str) -> str:
    """A page without what differs between any two visitors: the address they typed and
    their CSRF tokens (masked afresh on every page)."""
    page = page.replace(email, "EMAIL")
    return re.sub(r'(csrfmiddlewaretoken" value=|X-CSRFToken": )"[^"]+"', r"\1TOKEN", page)


def verification_path() -> str:
    (message,) = mail.outbox[-1:]
    (link,) = links_in(message)
    return path_of(link)


def test_signing_up_verifying_and_landing_on_the_overview_with_a_wallet(db: None) -> None:
    client = Client()
    page = client.get("/dashboard/sign-up/").content.decode()
    for label in ('for="id_email"', 'for="id_password"', 'for="id_display_name"'):
        assert label in page

    response = sign_up(client, display_name="Acme AI")
    assert response.status_code == 302
    assert response["Location"] == "/dashboard/verify-email/"
    inbox = client.get("/dashboard/verify-email/").content.decode()
    assert NEW in inbox

    # One email, to the address as typed (its domain in lower case), with the link.
    (message,) = mail.outbox
    assert message.to == ["New.Reseller@example.com"]
    assert "Verify your email" in message.subject
    user = get_user_model().objects.get(email__iexact=NEW)
    assert not user.is_active
    tenant = Tenant.objects.get(owner=user)
    assert tenant.name == "Acme AI"
    assert Wallet.objects.filter(tenant=tenant, balance_nanos=0).exists()
    # No API token whose secret nobody was shown: the reseller makes one on the dashboard.
    assert not ApiToken.objects.filter(tenant=tenant).exists()

    # Following the link shows a button (a mail scanner's GET changes nothing) ...
    path = verification_path()
    confirm = client.get(path)
    assert confirm.status_code == 200
    assert "Verify and sign in" in confirm.content.decode()
    user.refresh_from_db()
    assert not user.is_active

    # ... which verifies and signs in, on the overview.
    response = client.post(path, follow=True)
    assert response.redirect_chain[-1][0] == "/dashboard/"
    page = response.content.decode()
    assert "Acme AI" in page
    assert "$0.00" in page
    assert "Your email is verified" in page
    user.refresh_from_db()
    assert user.is_active
    assert SignUp.objects.get(user=user).is_verified

    # Used once: the link is spent, and the password signs in from now on.
    assert Client().post(path).status_code == 400
    fresh = Client()
    signed = fresh.post(
        "/dashboard/sign-in/", {"username": "new.reseller@example.com", "password": PASSWORD}
    )
    assert signed.status_code == 302
    assert signed["Location"] == "/dashboard/"


def test_before_verifying_the_sign_in_asks_for_it_and_offers_a_new_link(db: None) -> None:
    sign_up(Client())
    client = Client()
    response = client.post("/dashboard/sign-in/", {"username": NEW, "password": PASSWORD})
    page = response.content.decode()
    assert response.status_code == 200
    assert "needs verifying" in page
    assert "Send a new verification link" in page
    assert client.get("/dashboard/").status_code == 302  # not signed in

    # The right password of a pending account is no failed sign-in (axes counts nothing).
    from axes.models import AccessAttempt

    assert not AccessAttempt.objects.exists()
    # A wrong one is refused like any other, without saying the account exists.
    wrong = client.post("/dashboard/sign-in/", {"username": NEW, "password": "nope"})
    assert "needs verifying" not in wrong.content.decode()
    assert "Enter the correct email and password" in wrong.content.decode()

    client.post("/dashboard/verify-email/", {"email": NEW})
    assert len(mail.outbox) == 2
    assert client.post(verification_path()).status_code == 302


def test_a_tampered_link_is_refused(db: None) -> None:
    sign_up(Client())
    path = verification_path()
    token = path.rstrip("/").rsplit("/", 1)[1]
    flipped = token[:-1] + ("A" if token[-1] != "A" else "B")
    for bad in (flipped, token[: len(token) // 2], "not-a-token"):
        response = Client().post(f"/dashboard/verify-email/{bad}/")
        assert response.status_code == 400
        assert "no longer works" in response.content.decode()
    assert not get_user_model().objects.get(email__iexact=NEW).is_active


def test_an_expired_link_is_refused(db: None, settings: Settings, monkeypatch) -> None:
    settings.EMAIL_VERIFICATION_SECONDS = 3600
    sign_up(Client())
    path = verification_path()
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + 3601)
    assert Client().post(path).status_code == 400
    monkeypatch.setattr(time, "time", real)
    assert not get_user_model().objects.get(email__iexact=NEW).is_active
    assert Client().post(path).status_code == 302  # within its hour it works


def test_a_newer_sign_up_for_a_pending_address_replaces_the_password_and_the_link(
    db: None,
) -> None:
    sign_up(Client(), password=PASSWORD)
    first = verification_path()
    sign_up(Client(), email=NEW.lower(), password="another-long-phrase-7")
    second = verification_path()
    assert first != second
    assert Client().post(first).status_code == 400
    assert get_user_model().objects.filter(email__iexact=NEW).count() == 1
    client = Client()
    assert client.post(second).status_code == 302
    assert (
        Client()
        .post("/dashboard/sign-in/", {"username": NEW, "password": "another-long-phrase-7"})
        .status_code
        == 302
    )


def test_a_taken_address_gets_the_same_answer_and_its_owner_a_note(
    make_reseller: Callable[..., tuple[Tenant, IssuedToken]],
) -> None:
    tenant, _ = make_reseller(email="owner@example.com")
    user_password_ensure(user=tenant.owner, password=PASSWORD)

    fresh_client, taken_client = Client(), Client()
    fresh = sign_up(fresh_client, email="someone.new@example.com")
    taken = sign_up(taken_client, email="OWNER@example.com", password="attacker-chosen-99")
    assert (fresh.status_code, fresh["Location"]) == (taken.status_code, taken["Location"])
    fresh_page = fresh_client.get("/dashboard/verify-email/").content.decode()
    taken_page = taken_client.get("/dashboard/verify-email/").content.decode()
    assert same_page(fresh_page, "someone.new@example.com") == same_page(
        taken_page, "OWNER@example.com"
    )

    # The owner is told, with no link that opens anything; nothing about the account changed.
    note = mail.outbox[-1]
    assert note.to == ["owner@example.com"]
    assert "tried to open" in note.subject
    assert all("/verify-email/" not in link for link in links_in(note))
    assert get_user_model().objects.filter(email__iexact="owner@example.com").count() == 1
    tenant.owner.refresh_from_db()
    assert tenant.owner.check_password(PASSWORD)
    assert not SignUp.objects.filter(user=tenant.owner).exists()


def test_sign_up_emails_to_one_address_are_limited(db: None, settings: Settings) -> None:
    settings.ACCOUNT_EMAILS_PER_HOUR = 2
    client = Client()
    sign_up(client)
    for _ in range(3):
        response = client.post("/dashboard/verify-email/", {"email": NEW})
        assert response.status_code == 302  # the same answer each time
    assert len(mail.outbox) == 2


def test_sign_ups_from_one_client_address_are_limited(db: None, settings: Settings) -> None:
    settings.SIGNUPS_PER_HOUR = 2
    client = Client(REMOTE_ADDR="203.0.113.9")
    for number in range(2):
        assert sign_up(client, email=f"bulk{number}@example.com").status_code == 302
    refused = sign_up(client, email="bulk9@example.com")
    assert refused.status_code == 429
    assert "Too many sign-ups" in refused.content.decode()
    assert not get_user_model().objects.filter(email="bulk9@example.com").exists()
    assert sign_up(Client(REMOTE_ADDR="198.51.100.1"), email="else@example.com").status_code == 302


def test_a_weak_password_or_a_bad_email_is_refused_on_the_form(db: None) -> None:
    response = sign_up(Client(), email="new@example.com", password="new@example.com")
    assert response.status_code == 200
    assert "too similar" in response.content.decode()
    response = sign_up(Client(), email="not-an-email", password=PASSWORD)
    assert "Enter a valid email address" in response.content.decode()
    response = sign_up(Client(), password="12345678")
    assert "entirely numeric" in response.content.decode()
    assert not get_user_model().objects.exists()
    assert mail.outbox == []


def test_the_account_and_its_wallet_are_made_together_or_not_at_all(db: None, monkeypatch) -> None:
    import billing.services

    def broken(**kwargs: object) -> None:
        raise RuntimeError("the wallet table is gone")

    monkeypatch.setattr(billing.services, "wallet_get_or_create", broken)
    with pytest.raises(RuntimeError):
        sign_up(Client())
    assert not get_user_model().objects.exists()
    assert not Tenant.objects.exists()
    assert not SignUp.objects.exists()
    assert mail.outbox == []


def test_with_sign_up_closed_there_is_no_sign_up(db: None, settings: Settings) -> None:
    assert 'href="/dashboard/sign-up/"' in Client().get("/dashboard/sign-in/").content.decode()
    settings.SIGNUP_OPEN = False
    response = Client().get("/dashboard/sign-up/")
    assert response.status_code == 404
    assert "Sign-up is closed" in response.content.decode()
    assert sign_up(Client()).status_code == 404
    assert not get_user_model().objects.exists()
    assert 'href="/dashboard/sign-up/"' not in Client().get("/dashboard/sign-in/").content.decode()


def test_a_signed_in_reseller_is_sent_on_from_the_sign_up(
    make_reseller: Callable[..., tuple[Tenant, IssuedToken]],
) -> None:
    tenant, _ = make_reseller()
    client = Client()
    client.force_login(tenant.owner)
    assert client.get("/dashboard/sign-up/")["Location"] == "/dashboard/"

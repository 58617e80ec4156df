"""Resetting a password by email: a one-use link, the same answer for every address, and at
most ACCOUNT_EMAILS_PER_HOUR emails to one address."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from django.contrib.auth import get_user_model
from django.core import mail
from django.test import Client
from pytest_django.fixtures import Settings

from accounts.models import Tenant
from accounts.services import IssuedToken, user_password_ensure
from tests.dashboard.auth_support import (
    NEW_PASSWORD,
    PASSWORD,
    auth_settings,  # noqa: F401 - the fixture
    links_in,
    path_of,
)

pytestmark = pytest.mark.usefixtures("auth_settings")


def ask_reset(email: str, client: Client | None = None):
    return (client or Client()).post("/dashboard/password-reset/", {"email": email})


def reset_link() -> str:
    (link,) = links_in(mail.outbox[-1])
    return path_of(link)


def test_a_reset_end_to_end(make_reseller: Callable[..., tuple[Tenant, IssuedToken]]) -> None:
    tenant, _ = make_reseller(email="carol@example.com")
    user_password_ensure(user=tenant.owner, password=PASSWORD)
    page = Client().get("/dashboard/password-reset/").content.decode()
    assert '<label for="id_email">Email</label>' in page

    response = ask_reset("CAROL@example.com")
    assert response.status_code == 302
    assert response["Location"] == "/dashboard/password-reset/sent/"
    (message,) = mail.outbox
    assert message.to == ["carol@example.com"]
    assert "1 hour" in message.body

    client = Client()
    link = reset_link()
    form = client.get(link, follow=True)
    set_password = form.redirect_chain[-1][0]
    assert set_password.endswith("/set-password/")  # the token leaves the address bar
    page = form.content.decode()
    assert 'for="id_new_password1"' in page and 'for="id_new_password2"' in page

    weak = client.post(set_password, {"new_password1": "123", "new_password2": "123"})
    assert weak.status_code == 200
    assert "too short" in weak.content.decode()

    done = client.post(set_password, {"new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD})
    assert done["Location"] == "/dashboard/password-reset/done/"
    signed_in = Client().post(
        "/dashboard/sign-in/", {"username": "carol@example.com", "password": NEW_PASSWORD}
    )
    assert signed_in.status_code == 302
    old = Client().post(
        "/dashboard/sign-in/", {"username": "carol@example.com", "password": PASSWORD}
    )
    assert old.status_code == 200

    # The link works once.
    again = Client().get(link, follow=True)
    assert "no longer works" in again.content.decode()


def test_an_unknown_address_gets_the_same_answer_and_no_email(db: None) -> None:
    response = ask_reset("nobody@example.com")
    assert response["Location"] == "/dashboard/password-reset/sent/"
    assert mail.outbox == []


def test_emails_to_one_address_are_limited(
    make_reseller: Callable[..., tuple[Tenant, IssuedToken]], settings: Settings
) -> None:
    settings.ACCOUNT_EMAILS_PER_HOUR = 2
    make_reseller(email="carol@example.com")
    for typed in ("carol@example.com", "Carol@example.com", "CAROL@EXAMPLE.COM"):
        assert ask_reset(typed)["Location"] == "/dashboard/password-reset/sent/"
    assert len(mail.outbox) == 2
    make_reseller(email="dave@example.com")
    ask_reset("dave@example.com")
    assert len(mail.outbox) == 3


def test_a_reseller_without_a_password_yet_can_set_one(
    make_reseller: Callable[..., tuple[Tenant, IssuedToken]],
) -> None:
    tenant, _ = make_reseller(email="nopass@example.com")
    assert not tenant.owner.has_usable_password()
    ask_reset("nopass@example.com")
    client = Client()
    set_password = client.get(reset_link(), follow=True).redirect_chain[-1][0]
    client.post(set_password, {"new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD})
    tenant.owner.refresh_from_db()
    assert tenant.owner.check_password(NEW_PASSWORD)


def test_operators_and_unverified_sign_ups_get_no_reset_email(db: None) -> None:
    get_user_model().objects.create_superuser(
        username="op@example.com", email="op@example.com", password=PASSWORD
    )
    Client().post("/dashboard/sign-up/", {"email": "pending@example.com", "password": PASSWORD})
    mail.outbox.clear()
    ask_reset("op@example.com")
    ask_reset("pending@example.com")
    assert mail.outbox == []

"""Who reaches the dashboard: signed-in resellers, each to their own tenant only."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from accounts.models import Tenant
from accounts.services import user_password_ensure

PASSWORD = "correct-horse-battery-9"


@pytest.fixture
def signed_in(tenant: Tenant) -> Client:
    user_password_ensure(user=tenant.owner, password=PASSWORD)
    client = Client()
    response = client.post(
        "/dashboard/sign-in/", {"username": tenant.owner.email, "password": PASSWORD}
    )
    assert response.status_code == 302
    assert response["Location"] == "/dashboard/"
    return client


def test_a_visitor_is_sent_to_the_sign_in_form(db: None) -> None:
    response = Client().get("/dashboard/")
    assert response.status_code == 302
    assert response["Location"] == "/dashboard/sign-in/?next=/dashboard/"
    form = Client().get(response["Location"]).content.decode()
    assert 'type="email"' in form
    assert 'type="password"' in form
    assert 'name="csrfmiddlewaretoken"' in form


def test_signing_in_lands_on_the_overview_with_the_wallet(
    make_reseller: Callable[..., tuple[Tenant, object]],
) -> None:
    tenant, _ = make_reseller(email="bob@example.com", balance="100")
    user_password_ensure(user=tenant.owner, password=PASSWORD)
    client = Client()
    response = client.post(
        "/dashboard/sign-in/", {"username": "bob@example.com", "password": PASSWORD}, follow=True
    )
    page = response.content.decode()
    assert response.redirect_chain[-1][0] == "/dashboard/"
    assert "$100.00" in page


def test_a_wrong_password_is_refused_on_the_form(tenant: Tenant) -> None:
    user_password_ensure(user=tenant.owner, password=PASSWORD)
    response = Client().post(
        "/dashboard/sign-in/", {"username": tenant.owner.email, "password": "wrong"}
    )
    assert response.status_code == 200
    assert "correct" in response.content.decode().lower()


def test_a_user_without_a_tenant_is_refused(db: None) -> None:
    get_user_model().objects.create_user(
        username="op@example.com", email="op@example.com", password=PASSWORD
    )
    client = Client()
    client.post("/dashboard/sign-in/", {"username": "op@example.com", "password": PASSWORD})
    assert client.get("/dashboard/").status_code == 403


def test_signing_out_takes_a_post_and_ends_the_session(signed_in: Client) -> None:
    assert signed_in.get("/dashboard/sign-out/").status_code == 405
    assert signed_in.post("/dashboard/sign-out/").status_code == 302
    assert signed_in.get("/dashboard/").status_code == 302


def test_forms_need_the_csrf_token(tenant: Tenant) -> None:
    user_password_ensure(user=tenant.owner, password=PASSWORD)
    client = Client(enforce_csrf_checks=True)
    response = client.post(
        "/dashboard/sign-in/", {"username": tenant.owner.email, "password": PASSWORD}
    )
    assert response.status_code == 403

"""The admin's second factor: an operator with an authenticator gives a code after the
password (the dashboard's code step), and with ADMIN_REQUIRE_2FA every operator must have
one; ``manage.py otp_enrol`` gives an operator an authenticator; the admin turns a
reseller's two-factor sign-in off."""

from __future__ import annotations

import re
from collections.abc import Iterator
from io import StringIO
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.test import Client

from accounts.management.commands.otp_enrol import Command as OtpEnrol
from accounts.models import AuthenticatorDevice, BackupCode
from accounts.selectors import two_factor_enabled
from accounts.services import operator_ensure, two_factor_confirm, two_factor_start
from billing.services import reseller_open
from tests.dashboard.auth_support import (
    PASSWORD,
    auth_settings,  # noqa: F401 - the fixture
    fresh_code,
    totp_code,
)

pytestmark = pytest.mark.usefixtures("auth_settings")
EMAIL = "ops@example.com"
CODE_STEP = "/dashboard/sign-in/code/"


@pytest.fixture
def operator(db: None) -> Any:
    return operator_ensure(email=EMAIL, password=PASSWORD)


def enrol(user: Any) -> AuthenticatorDevice:
    device = two_factor_start(user=user)
    confirmed, _ = two_factor_confirm(user=user, code=totp_code(device))
    return confirmed


def admin_sign_in() -> Client:
    client = Client()
    response = client.post(
        "/admin/login/?next=/admin/",
        {"username": EMAIL, "password": PASSWORD, "next": "/admin/"},
    )
    assert response.status_code == 302, response.content
    return client


def test_an_operator_without_an_authenticator_signs_in_with_the_password(operator: Any) -> None:
    client = admin_sign_in()
    assert client.get("/admin/").status_code == 200


def test_an_operator_with_an_authenticator_gives_a_code_after_the_password(
    operator: Any,
) -> None:
    device = enrol(operator)
    client = admin_sign_in()
    # The password alone opens no admin page: the login sends the session to the code step.
    index = client.get("/admin/")
    assert index.status_code == 302 and index["Location"].startswith("/admin/login/")
    login = client.get(index["Location"])
    assert login["Location"] == f"{CODE_STEP}?next=%2Fadmin%2F"
    assert client.get("/admin/accounts/tenant/").status_code == 302

    response = client.post(CODE_STEP, {"code": fresh_code(device), "next": "/admin/"})
    assert response["Location"] == "/admin/"
    assert client.get("/admin/").status_code == 200
    assert client.get("/admin/accounts/tenant/").status_code == 200


def test_with_admin_require_2fa_an_operator_without_one_is_refused(
    operator: Any, settings: Any
) -> None:
    settings.ADMIN_REQUIRE_2FA = True
    client = admin_sign_in()
    assert client.get("/admin/").status_code == 302
    page = client.get("/admin/login/?next=/admin/")
    assert page.status_code == 403
    assert f"manage.py otp_enrol {EMAIL}" in page.content.decode()
    # The code step has nothing to ask of them: no way in there either.
    assert client.get(f"{CODE_STEP}?next=/admin/")["Location"] == "/admin/"
    assert client.get("/admin/").status_code == 302


def test_with_admin_require_2fa_a_verified_operator_gets_in(operator: Any, settings: Any) -> None:
    settings.ADMIN_REQUIRE_2FA = True
    device = enrol(operator)
    client = admin_sign_in()
    assert client.get("/admin/login/?next=/admin/")["Location"].startswith(CODE_STEP)
    client.post(CODE_STEP, {"code": fresh_code(device), "next": "/admin/"})
    assert client.get("/admin/").status_code == 200


def test_a_reseller_is_no_operator_even_with_a_code(db: None) -> None:
    tenant, _ = reseller_open(email="res@example.com", password=PASSWORD)
    client = Client()
    client.post("/admin/login/", {"username": "res@example.com", "password": PASSWORD})
    assert client.get("/admin/").status_code == 302
    assert tenant.owner.is_staff is False


@pytest.fixture
def answers(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """What the operator types at otp_enrol's prompts; a callable answer gets the device."""
    typed: list[Any] = []

    def ask(self: OtpEnrol, prompt: str) -> str:
        answer = typed.pop(0)
        if callable(answer):
            return answer(AuthenticatorDevice.objects.get(confirmed=False))
        return answer

    monkeypatch.setattr(OtpEnrol, "ask", ask)
    yield typed


def test_otp_enrol_prints_the_uri_once_and_confirms_with_a_code(
    operator: Any, answers: list[Any], settings: Any
) -> None:
    settings.OTP_TOTP_THROTTLE_FACTOR = 0
    answers.extend(["000000", totp_code])
    out, err = StringIO(), StringIO()
    call_command("otp_enrol", EMAIL, stdout=out, stderr=err)
    printed = out.getvalue()
    device = AuthenticatorDevice.objects.get(user=operator)
    assert device.confirmed and two_factor_enabled(user=operator)
    assert device.config_url in printed
    assert "does not match" in err.getvalue()
    codes = re.findall(r"^  ([a-z2-7]{8})$", printed, re.MULTILINE)
    assert len(codes) == 10 == BackupCode.objects.filter(device__user=operator).count()

    with pytest.raises(CommandError, match="already has an authenticator"):
        call_command("otp_enrol", EMAIL, stdout=StringIO())
    answers.extend(["1", "2", "3"])
    with pytest.raises(CommandError, match="not enrolled"):
        call_command("otp_enrol", EMAIL, "--replace", "--no-qr", stdout=StringIO(), stderr=err)
    # A failed replacement leaves the confirmed authenticator as it was.
    assert AuthenticatorDevice.objects.get(user=operator, confirmed=True).pk == device.pk


def test_otp_enrol_needs_a_known_account(db: None) -> None:
    with pytest.raises(CommandError, match="no account"):
        call_command("otp_enrol", "nobody@example.com", stdout=StringIO())


def test_the_admin_turns_a_resellers_two_factor_sign_in_off(operator: Any) -> None:
    tenant, _ = reseller_open(email="lost@example.com", password=PASSWORD)
    device = enrol(tenant.owner)
    client = Client()
    client.force_login(operator)
    changelist = "/admin/accounts/authenticatordevice/"
    page = client.get(changelist).content.decode()
    assert "lost@example.com" in page
    response = client.post(
        changelist, {"action": "reset", "_selected_action": [device.pk]}, follow=True
    )
    assert "turned off for 1 user(s)" in response.content.decode()
    assert not two_factor_enabled(user=tenant.owner)
    assert not BackupCode.objects.filter(device__user=tenant.owner).exists()

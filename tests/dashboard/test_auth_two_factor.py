"""Optional two-factor sign-in: turning it on with a code from the app, the code step at
sign-in (an authenticator code or a single-use backup code), wrong codes throttled and
counted, turning it off; and the password change beside it on the Security page."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from django.test import Client

from accounts.models import AuthenticatorDevice, BackupCode, BackupCodeDevice, Tenant
from accounts.services import IssuedToken, user_password_ensure
from tests.dashboard.auth_support import (
    LIMIT,
    NEW_PASSWORD,
    PASSWORD,
    auth_settings,  # noqa: F401 - the fixture
    fresh_code,
    throttle_forget,
    totp_code,
)

pytestmark = pytest.mark.usefixtures("auth_settings")
EMAIL = "erin@example.com"
CODE_STEP = "/dashboard/sign-in/code/"


@pytest.fixture
def erin(make_reseller: Callable[..., tuple[Tenant, IssuedToken]]) -> Tenant:
    tenant, _ = make_reseller(email=EMAIL, balance="20")
    user_password_ensure(user=tenant.owner, password=PASSWORD)
    return tenant


def signed_in(password: str = PASSWORD) -> Client:
    client = Client()
    response = client.post("/dashboard/sign-in/", {"username": EMAIL, "password": password})
    assert response.status_code == 302, response.content
    return client


def turn_on(client: Client) -> tuple[AuthenticatorDevice, list[str]]:
    """Turn two-factor sign-in on through the pages; the device and the backup codes."""
    assert client.post("/dashboard/security/two-factor/start/").status_code == 302
    device = AuthenticatorDevice.objects.get(confirmed=False)
    response = client.post("/dashboard/security/two-factor/", {"code": totp_code(device)})
    assert response["Location"] == "/dashboard/security/backup-codes/"
    page = client.get("/dashboard/security/backup-codes/").content.decode()
    codes = re.findall(r"<li><code>([a-z2-7]{8})</code></li>", page)
    device.refresh_from_db()
    return device, codes


def test_turning_it_on_shows_a_qr_code_and_the_key_then_backup_codes_once(
    erin: Tenant,
) -> None:
    client = signed_in()
    page = client.get("/dashboard/security/").content.decode()
    assert "Turn on two-factor sign-in" in page

    client.post("/dashboard/security/two-factor/start/")
    setup = client.get("/dashboard/security/two-factor/")
    page = setup.content.decode()
    device = AuthenticatorDevice.objects.get(user=erin.owner)
    assert not device.confirmed
    # The QR code is inline SVG markup (the CSP allows no image from elsewhere), and the
    # key is there as text for typing in.
    assert '<svg viewBox="' in page and 'class="qr-code"' in page
    assert "<img" not in page
    key = re.search(r'id="totp-secret">([A-Z2-7 ]+)<', page)
    assert key
    import base64

    assert base64.b32decode(key.group(1).replace(" ", "")) == device.bin_key
    assert "no-store" in setup["Cache-Control"] or "max-age=0" in setup["Cache-Control"]

    # Not on until a code from the app confirms it.
    wrong = client.post("/dashboard/security/two-factor/", {"code": "000000"})
    assert wrong.status_code == 200
    assert "does not match" in wrong.content.decode()
    device.refresh_from_db()
    assert not device.confirmed
    throttle_forget(device)

    response = client.post("/dashboard/security/two-factor/", {"code": totp_code(device)})
    assert response["Location"] == "/dashboard/security/backup-codes/"
    codes_page = client.get("/dashboard/security/backup-codes/")
    codes = re.findall(r"<li><code>([a-z2-7]{8})</code></li>", codes_page.content.decode())
    assert len(codes) == 10 and len(set(codes)) == 10
    assert "only time they are shown" in codes_page.content.decode()
    # Shown once.
    assert client.get("/dashboard/security/backup-codes/")["Location"] == "/dashboard/security/"
    # This session gave a code: it carries on without the code step.
    page = client.get("/dashboard/security/").content.decode()
    assert "Backup codes left: <strong>10</strong>" in page
    assert client.get("/dashboard/").status_code == 200


def test_signing_in_then_asks_for_a_code_before_any_page(erin: Tenant) -> None:
    device, _ = turn_on(signed_in())

    client = Client()
    response = client.post(
        "/dashboard/sign-in/",
        {"username": EMAIL, "password": PASSWORD, "next": "/dashboard/security/"},
    )
    assert response["Location"] == f"{CODE_STEP}?next=%2Fdashboard%2Fsecurity%2F"
    # Signed in with the password alone, no dashboard page lets the session in.
    for path in ("/dashboard/", "/dashboard/security/", "/dashboard/security/backup-codes/"):
        blocked = client.get(path)
        assert blocked.status_code == 302
        assert blocked["Location"].startswith(f"{CODE_STEP}?next=")
    page = client.get(CODE_STEP).content.decode()
    assert 'for="id_code"' in page
    assert 'autocomplete="one-time-code"' in page

    response = client.post(CODE_STEP, {"code": fresh_code(device), "next": "/dashboard/security/"})
    assert response["Location"] == "/dashboard/security/"
    assert client.get("/dashboard/").status_code == 200


def test_a_wrong_code_is_refused_and_throttled(erin: Tenant) -> None:
    device, _ = turn_on(signed_in())
    client = signed_in()

    wrong = client.post(CODE_STEP, {"code": "000000"})
    assert wrong.status_code == 200
    assert "That code is not right" in wrong.content.decode()
    # Right after a wrong code even the right one waits (django-otp's throttle) ...
    throttled = client.post(CODE_STEP, {"code": fresh_code(device)})
    assert "Too many wrong codes" in throttled.content.decode()
    assert client.get("/dashboard/").status_code == 302
    # ... and is taken once the delay has passed.
    throttle_forget(device)
    assert client.post(CODE_STEP, {"code": fresh_code(device)})["Location"] == "/dashboard/"


def test_wrong_codes_count_as_failed_sign_ins_and_lock_the_account(erin: Tenant) -> None:
    device, _ = turn_on(signed_in())
    client = signed_in()
    for _ in range(LIMIT):
        throttle_forget(device)
        response = client.post(CODE_STEP, {"code": "000000"})
    assert response.status_code == 429
    assert "Too many failed sign-ins" in response.content.decode()
    # The half-signed-in session is over, and the password alone no longer signs in.
    assert client.get(CODE_STEP)["Location"].startswith("/dashboard/sign-in/")
    again = Client().post("/dashboard/sign-in/", {"username": EMAIL, "password": PASSWORD})
    assert again.status_code == 429


def test_a_backup_code_works_once(erin: Tenant) -> None:
    _, codes = turn_on(signed_in())
    code = codes[3]

    client = signed_in()
    response = client.post(CODE_STEP, {"code": code.upper()[:4] + "-" + code.upper()[4:]})
    assert response["Location"] == "/dashboard/"
    page = client.get("/dashboard/").content.decode()
    assert "backup code; 9 left" in page
    assert BackupCode.objects.count() == 9

    client.post("/dashboard/sign-out/")
    client = signed_in()
    reused = client.post(CODE_STEP, {"code": code})
    assert reused.status_code == 200
    assert client.get("/dashboard/").status_code == 302


def test_new_backup_codes_replace_the_old_ones(erin: Tenant) -> None:
    client = signed_in()
    device, old = turn_on(client)
    assert client.post("/dashboard/security/backup-codes/")["Location"] == (
        "/dashboard/security/backup-codes/"
    )
    page = client.get("/dashboard/security/backup-codes/").content.decode()
    new = re.findall(r"<li><code>([a-z2-7]{8})</code></li>", page)
    assert len(new) == 10 and not set(new) & set(old)

    other = signed_in()
    assert other.post(CODE_STEP, {"code": old[0]}).status_code == 200
    throttle_forget(BackupCodeDevice.objects.get())
    assert other.post(CODE_STEP, {"code": new[0]})["Location"] == "/dashboard/"


def test_turning_it_off_needs_the_password_or_a_code(erin: Tenant) -> None:
    client = signed_in()
    device, codes = turn_on(client)

    nothing = client.post("/dashboard/security/two-factor/off/", {})
    assert "Give your password or a code" in nothing.content.decode()
    wrong = client.post("/dashboard/security/two-factor/off/", {"password": "nope"})
    assert "That is not your password" in wrong.content.decode()
    assert AuthenticatorDevice.objects.filter(confirmed=True).exists()

    done = client.post("/dashboard/security/two-factor/off/", {"code": codes[0]})
    assert done["Location"] == "/dashboard/security/"
    assert not AuthenticatorDevice.objects.exists() and not BackupCodeDevice.objects.exists()
    # Signing in is the password alone again.
    assert (
        Client().post("/dashboard/sign-in/", {"username": EMAIL, "password": PASSWORD})["Location"]
        == "/dashboard/"
    )

    device, _ = turn_on(client)
    client.post("/dashboard/security/two-factor/off/", {"password": PASSWORD})
    assert not AuthenticatorDevice.objects.exists()


def test_changing_the_password_keeps_this_session_and_ends_the_others(erin: Tenant) -> None:
    client, other = signed_in(), signed_in()
    wrong = client.post(
        "/dashboard/security/password/",
        {"old_password": "nope", "new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD},
    )
    assert wrong.status_code == 200
    assert "Your old password was entered incorrectly" in wrong.content.decode()

    done = client.post(
        "/dashboard/security/password/",
        {"old_password": PASSWORD, "new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD},
    )
    assert done["Location"] == "/dashboard/security/"
    assert client.get("/dashboard/").status_code == 200
    assert other.get("/dashboard/").status_code == 302
    signed_in(NEW_PASSWORD)


def test_the_security_page_labels_every_field(erin: Tenant) -> None:
    client = signed_in()
    turn_on(client)
    page = client.get("/dashboard/security/").content.decode()
    for name in ("old_password", "new_password1", "new_password2", "password", "code"):
        assert f'for="id_{name}"' in page, name

"""Sign-in throttling (django-axes) on the operator's admin login.

Failures count per account and, separately, per client address; either count at the limit
locks that account (from anywhere, right password or not) or that address (for every
account) until the cool-off has passed. The dashboard will sign in through the same
``authenticate(request=...)``, so it inherits all of this."""

from __future__ import annotations

import io
import time
from datetime import timedelta

import pytest
from axes.exceptions import AxesBackendRequestParameterRequired
from axes.models import AccessAttempt
from django.contrib.auth import authenticate, get_user_model
from django.core.management import call_command
from django.test import Client, RequestFactory
from django.urls import reverse

from accounts.lockout import LOCKED_OUT

LIMIT = 3
OPERATOR = "op@example.com"
PASSWORD = "correct-horse-battery-9"
HOME, ELSEWHERE, ATTACKER = "192.0.2.10", "198.51.100.7", "203.0.113.66"


@pytest.fixture(autouse=True)
def lockout_settings(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    settings.AXES_FAILURE_LIMIT = LIMIT
    settings.AXES_COOLOFF_TIME = timedelta(minutes=15)
    settings.AXES_RESET_ON_SUCCESS = False


@pytest.fixture
def operator(db):
    return get_user_model().objects.create_superuser(
        username=OPERATOR, email=OPERATOR, password=PASSWORD
    )


def sign_in(username: str, password: str, address: str):
    """One attempt at the admin's login form, from ``address``, in a fresh browser."""
    return Client(REMOTE_ADDR=address).post(
        reverse("admin:login"),
        {"username": username, "password": password, "next": "/admin/"},
    )


def signed_in(response) -> bool:
    return response.status_code == 302 and response["Location"] == "/admin/"


def assert_locked(response) -> None:
    assert response.status_code == 429
    assert response.content.decode() == LOCKED_OUT
    assert response["Retry-After"] == str(15 * 60)


def test_wrong_passwords_below_the_limit_only_fail(operator):
    for _ in range(LIMIT - 1):
        response = sign_in(OPERATOR, "wrong", HOME)
        assert response.status_code == 200  # the form again, with its error
        assert "Please enter the correct" in response.content.decode()
    assert signed_in(sign_in(OPERATOR, PASSWORD, HOME))


def test_failures_lock_the_account_even_for_the_right_password_from_another_address(operator):
    # Spread over addresses, as a distributed guesser would: the account's count adds up.
    for address in (ATTACKER, "203.0.113.67", "203.0.113.68"):
        assert sign_in(OPERATOR, "wrong", address).status_code in (200, 429)

    assert_locked(sign_in(OPERATOR, PASSWORD, HOME))
    assert_locked(sign_in(OPERATOR, PASSWORD, ELSEWHERE))
    # Another account is not locked by the operator's failures (nor is any address: each
    # saw one failure).
    get_user_model().objects.create_superuser(
        username="other@example.com", email="other@example.com", password=PASSWORD
    )
    assert signed_in(sign_in("other@example.com", PASSWORD, ATTACKER))


def test_failures_from_one_address_lock_it_for_every_account(operator):
    # A password spray: one guess at each of many accounts, from one address.
    for victim in ("a@example.com", "b@example.com", "c@example.com"):
        sign_in(victim, "Winter2026!", ATTACKER)

    assert_locked(sign_in(OPERATOR, PASSWORD, ATTACKER))
    # The operator, elsewhere, is not locked: the account saw no failure.
    assert signed_in(sign_in(OPERATOR, PASSWORD, HOME))


def test_the_lock_lifts_after_the_cool_off(operator, settings):
    settings.AXES_COOLOFF_TIME = timedelta(seconds=1)
    for _ in range(LIMIT):
        sign_in(OPERATOR, "wrong", ATTACKER)
    response = sign_in(OPERATOR, PASSWORD, HOME)
    assert response.status_code == 429
    assert response["Retry-After"] == "1"

    time.sleep(1.2)
    assert signed_in(sign_in(OPERATOR, PASSWORD, HOME))


def test_a_failure_during_the_lock_restarts_the_cool_off(operator, settings):
    settings.AXES_COOLOFF_TIME = timedelta(seconds=1)
    for _ in range(LIMIT):
        sign_in(OPERATOR, "wrong", ATTACKER)
    time.sleep(0.7)
    sign_in(OPERATOR, "wrong", ATTACKER)  # refused, and counted: the lock lasts longer
    time.sleep(0.7)
    assert sign_in(OPERATOR, PASSWORD, HOME).status_code == 429
    time.sleep(0.6)
    assert signed_in(sign_in(OPERATOR, PASSWORD, HOME))


def test_by_default_a_success_does_not_forget_earlier_failures(operator):
    for _ in range(LIMIT - 1):
        sign_in(OPERATOR, "wrong", HOME)
    assert signed_in(sign_in(OPERATOR, PASSWORD, HOME))

    sign_in(OPERATOR, "wrong", HOME)  # the limit-th failure within the cool-off
    assert_locked(sign_in(OPERATOR, PASSWORD, HOME))


def test_with_reset_on_success_a_success_starts_the_count_again(operator, settings):
    settings.AXES_RESET_ON_SUCCESS = True
    for _ in range(LIMIT - 1):
        sign_in(OPERATOR, "wrong", HOME)
    assert signed_in(sign_in(OPERATOR, PASSWORD, HOME))

    for _ in range(LIMIT - 1):
        sign_in(OPERATOR, "wrong", HOME)
    assert signed_in(sign_in(OPERATOR, PASSWORD, HOME))
    for _ in range(LIMIT):
        sign_in(OPERATOR, "wrong", HOME)
    assert_locked(sign_in(OPERATOR, PASSWORD, HOME))


@pytest.mark.parametrize(
    ("command", "args"),
    [
        ("axes_reset", []),
        ("axes_reset_username", [OPERATOR]),
    ],
)
def test_the_operator_commands_lift_a_lock_at_once(operator, command, args):
    for _ in range(LIMIT):
        sign_in(OPERATOR, "wrong", ATTACKER)
    assert_locked(sign_in(OPERATOR, PASSWORD, HOME))

    call_command(command, *args, stdout=io.StringIO())
    assert signed_in(sign_in(OPERATOR, PASSWORD, HOME))


def test_axes_reset_ip_lifts_an_address_lock(operator):
    for victim in ("a@example.com", "b@example.com", "c@example.com"):
        sign_in(victim, "wrong", ATTACKER)
    assert_locked(sign_in(OPERATOR, PASSWORD, ATTACKER))

    call_command("axes_reset_ip", ATTACKER, stdout=io.StringIO())
    assert signed_in(sign_in(OPERATOR, PASSWORD, ATTACKER))


def test_a_forwarded_for_header_does_not_choose_the_counted_address(operator):
    """Only the server (uvicorn, for a peer in FORWARDED_ALLOW_IPS) may rewrite the
    client's address; a header that reaches Django is not believed."""
    for index in range(LIMIT):
        Client(REMOTE_ADDR=ATTACKER, HTTP_X_FORWARDED_FOR=f"10.0.0.{index}").post(
            reverse("admin:login"), {"username": f"v{index}@example.com", "password": "x"}
        )
    assert set(AccessAttempt.objects.values_list("ip_address", flat=True)) == {ATTACKER}
    assert_locked(sign_in(OPERATOR, PASSWORD, ATTACKER))


def test_a_reseller_password_from_create_reseller_signs_in_through_authenticate(db):
    call_command(
        "create_reseller", "dash@example.com", "--password", PASSWORD, stdout=io.StringIO()
    )
    request = RequestFactory().post("/login/", REMOTE_ADDR=HOME)
    user = authenticate(request, username="dash@example.com", password=PASSWORD)
    assert user is not None and user.get_username() == "dash@example.com"
    # Sign-in is throttled only where the request is known: a form must pass it.
    with pytest.raises(AxesBackendRequestParameterRequired):
        authenticate(username="dash@example.com", password=PASSWORD)

"""Shared pieces of the account tests (sign-up, sign-in, password reset, two-factor)."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

import pytest
from django.core import mail
from django.core.cache import cache
from django.test import Client
from django_otp.models import Device
from django_otp.oath import TOTP
from pytest_django.fixtures import Settings

from accounts.models import AuthenticatorDevice

PASSWORD = "correct-horse-battery-9"
NEW_PASSWORD = "stapled-violet-lantern-4"
LIMIT = 3
LINK = re.compile(r"https?://[^\s]+")


@pytest.fixture
def auth_settings(settings: Settings) -> Iterator[None]:
    """A fast hasher, a small failure limit, and no throttle counts left by other tests
    (on Redis the cache outlives a test)."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    settings.AXES_FAILURE_LIMIT = LIMIT
    settings.SIGNUP_OPEN = True
    cache.clear()
    yield
    cache.clear()


def links_in(message: mail.EmailMessage) -> list[str]:
    return LINK.findall(str(message.body))


def path_of(url: str) -> str:
    """The path of an absolute link from an email (the test client takes paths)."""
    return "/" + url.split("://", 1)[1].split("/", 1)[1]


def totp_code(device: AuthenticatorDevice, *, steps_ahead: int = 0) -> str:
    """The code an authenticator app with ``device``'s key shows now (or ``steps_ahead``
    periods later), worked out from the key as the app does (RFC 6238)."""
    totp = TOTP(device.bin_key, device.step, device.t0, device.digits, device.drift)
    totp.time = time.time() + steps_ahead * device.step
    return f"{totp.token():0{device.digits}d}"


def fresh_code(device: AuthenticatorDevice) -> str:
    """A code the device will take now: django-otp refuses a code of a period it already
    accepted one from (no replay), so tests that sign in twice within 30 s forget it."""
    AuthenticatorDevice.objects.filter(pk=device.pk).update(last_t=-1)
    device.refresh_from_db()
    return totp_code(device)


def throttle_forget(device: Device) -> None:
    """Let a device check a code at once after a wrong one (as if its delay had passed)."""
    type(device)._default_manager.filter(pk=device.pk).update(
        throttling_failure_count=0, throttling_failure_timestamp=None
    )


def csrf_token(client: Client, path: str) -> str:
    response = client.get(path)
    match = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', response.content.decode())
    assert match, path
    return match.group(1)

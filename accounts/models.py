from __future__ import annotations

import functools
import secrets
import time
from base64 import b32encode
from binascii import unhexlify
from typing import Any
from urllib.parse import quote, urlencode
from zoneinfo import ZoneInfo, available_timezones

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.utils import timezone
from django_otp.models import Device, ThrottlingMixin, TimestampMixin
from django_otp.oath import TOTP

from accounts.crypto import TOTP_KEYS, decrypt, encrypt
from accounts.hashing import backup_code_digest, secret_matches

TENANT_NAME_MAX_LENGTH = 200
SUPPORT_EMAIL_MAX_LENGTH = 254
ZONE_NAME_MAX_LENGTH = 64

# Names in the machine's zone directory that are no IANA zone: what they mean depends on the
# machine (``localtime`` is its own setting).
NOT_IANA_ZONES = frozenset({"localtime", "posixrules"})


@functools.cache
def known_zones() -> frozenset[str]:
    """The IANA zone names this machine knows; cached, as listing them reads the disk
    (~0.2 s) and every report may check a ``?tz=``."""
    return frozenset(available_timezones()) - NOT_IANA_ZONES


def zone_validate(name: str) -> None:
    """An IANA time zone name this machine knows (``Asia/Kolkata``, ``UTC``)."""
    if name not in known_zones():
        raise ValidationError(
            f"Unknown time zone {name!r}: give an IANA name such as Europe/Paris."
        )


class TenantQuerySet(models.QuerySet["Tenant"]):
    def active(self) -> TenantQuerySet:
        return self.filter(is_active=True)


class Tenant(models.Model):
    """A reseller: an organisation with one wallet, its client keys and its API tokens."""

    name = models.CharField(max_length=TENANT_NAME_MAX_LENGTH)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="tenants"
    )
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(default=timezone.now)
    # Where the tenant's clients write when they have a question (shown in the portal and
    # on statements); blank: none given.
    support_email = models.EmailField(max_length=SUPPORT_EMAIL_MAX_LENGTH, blank=True, default="")
    # The IANA time zone of the tenant's reports: their days and months start at its
    # midnight. ``db_default``: rows written before the column existed are UTC.
    timezone = models.CharField(
        max_length=ZONE_NAME_MAX_LENGTH,
        default="UTC",
        db_default="UTC",
        validators=[zone_validate],
    )

    objects = TenantQuerySet.as_manager()

    def __str__(self) -> str:
        return self.name

    @property
    def zone(self) -> ZoneInfo:
        """The report time zone (ZoneInfo caches its instances)."""
        return ZoneInfo(self.timezone)


class ApiTokenQuerySet(models.QuerySet["ApiToken"]):
    def active(self) -> ApiTokenQuerySet:
        return self.filter(revoked_at__isnull=True)


class ApiToken(models.Model):
    """A reseller API token: shown once, stored as a keyed hash, revocable."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100, default="default")
    prefix = models.CharField(max_length=16, unique=True)
    digest = models.CharField(max_length=64)
    last4 = models.CharField(max_length=4)
    created_at = models.DateTimeField(default=timezone.now)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    objects = ApiTokenQuerySet.as_manager()

    def __str__(self) -> str:
        return f"{self.prefix}…{self.last4}"

    @property
    def is_revoked(self) -> bool:
        return self.revoked_at is not None

    def matches(self, secret: str) -> bool:
        return secret_matches(secret, self.digest)


class SignUp(models.Model):
    """A reseller account opened on the dashboard's sign-up form.

    Its owner stays inactive (cannot sign in) until the email is verified by following the
    link sent to it; accounts the operator creates have no SignUp row and are verified from
    the start. Until then a new sign-up for the same address replaces the pending password.
    """

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="sign_up"
    )
    created_at = models.DateTimeField(default=timezone.now)
    verified_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"sign-up of user {self.user_id}"

    @property
    def is_verified(self) -> bool:
        return self.verified_at is not None


# ---------------------------------------------------------------- two-factor devices
# django-otp devices (``django_otp.login`` records one in the session, ``is_verified`` finds
# it again), but no secret in clear: the authenticator's key is encrypted, the backup codes
# are keyed hashes. Both throttle wrong codes (ThrottlingMixin: 1, 2, 4 … s times the
# OTP_TOTP_THROTTLE_FACTOR / OTP_STATIC_THROTTLE_FACTOR setting).

TOTP_KEY_BYTES = 20


def _totp_key_new() -> str:
    return encrypt(secrets.token_hex(TOTP_KEY_BYTES), purpose=TOTP_KEYS)


class AuthenticatorDevice(TimestampMixin, ThrottlingMixin, Device):
    """An authenticator app (TOTP, RFC 6238), as django-otp's TOTPDevice but with its key
    (hex) encrypted (``accounts.crypto``, its own derived key), decrypted only to check a
    code or to show the QR code while it is being set up.

    ``tolerance`` steps either side of now are accepted, ``drift`` follows the app's clock,
    and ``last_t`` (the time step of the last code accepted) refuses any code of that step
    or an earlier one: a code works once.
    """

    encrypted_key: models.TextField[str, str] = models.TextField(default=_totp_key_new)
    step: models.PositiveSmallIntegerField[int, int] = models.PositiveSmallIntegerField(default=30)
    t0: models.BigIntegerField[int, int] = models.BigIntegerField(default=0)
    digits: models.PositiveSmallIntegerField[int, int] = models.PositiveSmallIntegerField(default=6)
    tolerance: models.PositiveSmallIntegerField[int, int] = models.PositiveSmallIntegerField(
        default=1
    )
    drift: models.SmallIntegerField[int, int] = models.SmallIntegerField(default=0)
    last_t: models.BigIntegerField[int, int] = models.BigIntegerField(default=-1)

    class Meta(Device.Meta):
        verbose_name = "authenticator device"

    @property
    def bin_key(self) -> bytes:
        return unhexlify(decrypt(self.encrypted_key, purpose=TOTP_KEYS).encode())

    def get_throttle_factor(self) -> int:
        return int(getattr(settings, "OTP_TOTP_THROTTLE_FACTOR", 1))

    def verify_token(self, token: Any) -> bool:
        allowed, _ = self.verify_is_allowed()
        if not allowed:
            return False
        try:
            number = int(token)
        except (TypeError, ValueError):
            verified = False
        else:
            totp = TOTP(self.bin_key, self.step, self.t0, self.digits, self.drift)
            totp.time = time.time()
            verified = totp.verify(number, self.tolerance, self.last_t + 1)
            if verified:
                self.last_t = totp.t()
                if getattr(settings, "OTP_TOTP_SYNC", True):
                    self.drift = totp.drift
                self.throttle_reset(commit=False)
                self.set_last_used_timestamp(commit=False)
                self.save()
        if not verified:
            self.throttle_increment(commit=True)
        return verified

    @property
    def config_url(self) -> str:
        """The otpauth:// URL an authenticator app reads (from the QR code)."""
        label = str(self.user.get_username())
        params = urlencode(
            {
                "secret": b32encode(self.bin_key).decode(),
                "algorithm": "SHA1",
                "digits": self.digits,
                "period": self.step,
            }
        )
        issuer = str(getattr(settings, "OTP_TOTP_ISSUER", "") or "").replace(":", "")
        if issuer:
            label = f"{issuer}:{label}"
            params += f"&issuer={quote(issuer)}"
        return f"otpauth://totp/{quote(label)}?{params}"


class BackupCodeDevice(TimestampMixin, ThrottlingMixin, Device):
    """A set of single-use backup codes (its ``codes``), stored as keyed hashes: a code
    typed is hashed and its row deleted; only the call whose DELETE removed the row
    accepts it, so a code works once even when two requests give it at the same moment."""

    class Meta(Device.Meta):
        verbose_name = "backup code set"

    def get_throttle_factor(self) -> int:
        return int(getattr(settings, "OTP_STATIC_THROTTLE_FACTOR", 1))

    def verify_token(self, token: Any) -> bool:
        allowed, _ = self.verify_is_allowed()
        if not allowed:
            return False
        used, _ = BackupCode.objects.filter(
            device=self, digest=backup_code_digest(str(token))
        ).delete()
        if used:
            self.throttle_reset(commit=False)
            self.set_last_used_timestamp(commit=False)
            self.save()
        else:
            self.throttle_increment(commit=True)
        return bool(used)


class BackupCode(models.Model):
    """One unused backup code: its keyed hash (``accounts.hashing.backup_code_digest``)."""

    device = models.ForeignKey(BackupCodeDevice, on_delete=models.CASCADE, related_name="codes")
    digest = models.CharField(max_length=64)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["device", "digest"], name="backup_code_once")
        ]

    def __str__(self) -> str:
        return f"backup code of device {self.device_id}"

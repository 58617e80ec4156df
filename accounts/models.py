from __future__ import annotations

import functools
from zoneinfo import ZoneInfo, available_timezones

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.utils import timezone

from accounts.hashing import secret_matches

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

"""The client portal's rows: who signed in (an email address), the code that signs it in,
and which client keys it has bound.

An end client has no account and no password. Anyone who proves they read an address's
mail (a one-time code, ``PortalCode``) is that address (``PortalClient``), and sees the keys
that address bound by pasting their secrets (``PortalBinding``). Many addresses may bind one
key (a team sharing a budget); one address may bind keys of several resellers.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone
from django_otp.models import CooldownMixin, ThrottlingMixin


class PortalClient(models.Model):
    """An email address that has signed in to the portal at least once. Made at its first
    sign-in, never when a code is asked for, so asking reveals nothing and costs no row."""

    # Lower-cased (``portal.services.email_normalize``): one client per mailbox.
    email = models.EmailField(max_length=254, unique=True)
    created_at = models.DateTimeField(default=timezone.now)
    last_sign_in_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["email"]

    def __str__(self) -> str:
        return self.email


class _ChecksEnd(models.Model):
    """Where django-otp's mixins end their checks. Each mixin's ``generate_is_allowed`` and
    ``verify_is_allowed`` says no, or passes on to ``super()``: on a django-otp ``Device``
    that is the device's own "yes", on a plain model nothing (AttributeError). This is that
    "yes" for a row that is not a device."""

    class Meta:
        abstract = True

    def generate_is_allowed(self) -> tuple[bool, dict[str, object] | None]:
        return True, None

    def verify_is_allowed(self) -> tuple[bool, dict[str, object] | None]:
        return True, None


class PortalCode(CooldownMixin, ThrottlingMixin, _ChecksEnd):
    """The one-time sign-in code of an email address, built on django-otp's device mixins:
    ``CooldownMixin`` spaces the sends (``PORTAL_CODE_COOLDOWN_SECONDS``) and
    ``ThrottlingMixin`` makes wrong codes wait 1, 2, 4 … seconds
    (``PORTAL_CODE_THROTTLE_FACTOR``) and counts them: ``PORTAL_CODE_MAX_ATTEMPTS`` wrong
    codes kill the code.

    One row per address, whoever asked; a new code replaces the last. Only a keyed hash of
    the code is stored (``digest``, HMAC-SHA256 with the address, so a read of the table
    gives no code and one digest cannot be tried against another address); ``digest`` is
    emptied when the code is used or dies.
    """

    email = models.EmailField(max_length=254, unique=True)
    digest = models.CharField(max_length=64, blank=True, default="")
    valid_until = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["email"]

    def __str__(self) -> str:
        return self.email

    def get_cooldown_duration(self) -> int:
        return int(settings.PORTAL_CODE_COOLDOWN_SECONDS)

    def get_throttle_factor(self) -> int:
        return int(settings.PORTAL_CODE_THROTTLE_FACTOR)


class PortalBinding(models.Model):
    """A client key a portal client bound by pasting its secret, and that client's alert
    choices for it: an email when the key has used ``alert_percent`` % of its budget (or of
    its spend cap this period), and one when it is exhausted. Each is sent once per crossing
    (``*_alerted_at`` set when sent) and re-armed (cleared) when the key is back below it,
    after a top-up or a raised cap."""

    client = models.ForeignKey(PortalClient, on_delete=models.CASCADE, related_name="bindings")
    key = models.ForeignKey(
        "keys.ClientKey", on_delete=models.CASCADE, related_name="portal_bindings"
    )
    created_at = models.DateTimeField(default=timezone.now)

    # Off until the client chooses them (the key's page).
    alert_percent = models.PositiveSmallIntegerField(null=True, blank=True)
    alert_exhausted = models.BooleanField(default=False)
    percent_alerted_at = models.DateTimeField(null=True, blank=True)
    exhausted_alerted_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["created_at", "pk"]
        constraints = [
            models.UniqueConstraint(fields=["client", "key"], name="portal_binding_unique"),
            models.CheckConstraint(
                condition=models.Q(alert_percent__isnull=True)
                | models.Q(alert_percent__gte=1, alert_percent__lte=100),
                name="portal_binding_alert_percent_range",
            ),
        ]
        indexes = [
            models.Index(fields=["key"], name="portal_binding_key"),
            # The alert check reads only the bindings with an alert on.
            models.Index(
                fields=["key", "id"],
                condition=models.Q(alert_percent__isnull=False) | models.Q(alert_exhausted=True),
                name="portal_binding_alerts_on",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.client} → key {self.key_id}"

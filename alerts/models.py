"""The reseller's alerts: what it asked to be warned of, where each warning stands, and
every delivery of one.

* ``AlertSettings``: one row per tenant (none until it changes a default): the shares of a
  key's budget or cap that alert (80 % and 100 % by default), a wallet balance and a
  runway in days under which the wallet alerts (off by default), the email switch and
  address, and the webhook (its URL and its signing secret, encrypted at rest).
* ``KeyAlertOverride``: one key's own shares instead of the tenant's (no row: the default).
* ``AlertState``: one per subject (a key, or the tenant's wallet), kind and threshold: the
  claim of its current crossing (``crossed_at``; None: armed). See ``alerts.services``.
* ``AlertEvent``: one crossing (or a test), with the figures it was claimed at: what every
  channel delivers, under one id.
* ``AlertDelivery``: the event on one channel (email or webhook), its status and tries;
  the row is the idempotency key of the send.
"""

from __future__ import annotations

from django.db import models
from django.db.models import Q
from django.utils import timezone

# The shares of a key's budget (prepaid) or spend cap (wallet-funded) that alert when no
# one chose others: most of it gone, then all of it.
DEFAULT_KEY_THRESHOLDS = (80, 100)
# A key threshold is a whole percent in this range; a list holds at most so many.
THRESHOLD_PERCENT_MIN = 1
THRESHOLD_PERCENT_MAX = 100
THRESHOLDS_MAX_COUNT = 10
# A wallet runway alert: fewer whole days left than this, from 1 to a year.
RUNWAY_DAYS_MIN = 1
RUNWAY_DAYS_MAX = 365
WEBHOOK_URL_MAX_LENGTH = 2000
EMAIL_MAX_LENGTH = 254
ERROR_MAX_LENGTH = 500


def default_key_thresholds() -> list[int]:
    return list(DEFAULT_KEY_THRESHOLDS)


class AlertSettings(models.Model):
    """A tenant's alert settings. A tenant without a row has the defaults (an unsaved
    ``AlertSettings(tenant=…)``, see ``alerts.selectors.alert_settings_get``)."""

    tenant = models.OneToOneField(
        "accounts.Tenant", on_delete=models.CASCADE, related_name="alert_settings"
    )
    # Whole percents of a key's budget or cap, ascending; [] turns key alerts off.
    key_thresholds = models.JSONField(default=default_key_thresholds)
    # Alert when the wallet's available money (balance less holds) is under this; None: off.
    wallet_balance_below_nanos = models.BigIntegerField(null=True, blank=True)
    # Alert when the wallet lasts fewer whole days than this at the last 7 days' pace.
    wallet_runway_days_below = models.PositiveSmallIntegerField(null=True, blank=True)
    is_email_on = models.BooleanField(default=True)
    # Blank: the owner's address (read when each email is sent).
    email_to = models.EmailField(max_length=EMAIL_MAX_LENGTH, blank=True, default="")
    webhook_url = models.CharField(max_length=WEBHOOK_URL_MAX_LENGTH, blank=True, default="")
    # The signing secret, encrypted (billing.crypto): every delivery is signed with it, so
    # it is kept usable, never hashed; shown once, when made; its last 4 characters after.
    webhook_secret_encrypted = models.TextField(blank=True, default="")
    webhook_secret_last4 = models.CharField(max_length=4, blank=True, default="")
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        verbose_name_plural = "alert settings"
        constraints = [
            models.CheckConstraint(
                condition=Q(wallet_balance_below_nanos__isnull=True)
                | Q(wallet_balance_below_nanos__gt=0),
                name="alert_settings_balance_positive",
            ),
            models.CheckConstraint(
                condition=Q(wallet_runway_days_below__isnull=True)
                | Q(
                    wallet_runway_days_below__gte=RUNWAY_DAYS_MIN,
                    wallet_runway_days_below__lte=RUNWAY_DAYS_MAX,
                ),
                name="alert_settings_runway_range",
            ),
        ]

    def __str__(self) -> str:
        return f"alert settings of tenant {self.tenant_id}"

    @property
    def has_webhook(self) -> bool:
        return bool(self.webhook_url)


class KeyAlertOverride(models.Model):
    """A key's own alert shares (whole percents, ascending; [] turns its alerts off),
    instead of its tenant's ``AlertSettings.key_thresholds``."""

    key = models.OneToOneField(
        "keys.ClientKey", on_delete=models.CASCADE, related_name="alert_override"
    )
    thresholds = models.JSONField()
    updated_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"alert shares of key {self.key_id}"


class AlertKind(models.TextChoices):
    """What an alert measures, and so what its ``threshold`` counts."""

    KEY_USAGE = "key_usage", "Share of a key's budget or cap"  # whole percent
    WALLET_BALANCE = "wallet_balance", "Wallet balance"  # nano-dollars
    WALLET_RUNWAY = "wallet_runway", "Wallet runway"  # whole days


class AlertState(models.Model):
    """Where one alert stands: armed (``crossed_at`` None) or claimed for the crossing that
    began at ``crossed_at``; re-armed (None again) once its subject is back on the safe
    side (a wallet's clearly, past a margin, unless credited since: see
    ``alerts.services.check``). ``crossings`` counts the claims."""

    tenant = models.ForeignKey("accounts.Tenant", on_delete=models.CASCADE, related_name="+")
    # The key of a key alert; None for the wallet's.
    key = models.ForeignKey(
        "keys.ClientKey", on_delete=models.CASCADE, null=True, blank=True, related_name="+"
    )
    kind = models.CharField(max_length=20, choices=AlertKind.choices)
    threshold = models.BigIntegerField()
    crossed_at = models.DateTimeField(null=True, blank=True)
    crossings = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [
            # One state per alert: the first claim of a new alert is its insert, and the
            # loser of two checks inserting it at once gets an IntegrityError.
            models.UniqueConstraint(
                fields=["key", "kind", "threshold"],
                condition=Q(key__isnull=False),
                name="alert_state_key_unique",
            ),
            models.UniqueConstraint(
                fields=["tenant", "kind", "threshold"],
                condition=Q(key__isnull=True),
                name="alert_state_wallet_unique",
            ),
            models.CheckConstraint(
                condition=Q(kind=AlertKind.KEY_USAGE, key__isnull=False)
                | (~Q(kind=AlertKind.KEY_USAGE) & Q(key__isnull=True)),
                name="alert_state_subject_matches_kind",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.threshold} ({'claimed' if self.crossed_at else 'armed'})"


class AlertEvent(models.Model):
    """One crossing claimed (or a test): its type and the figures it was claimed at
    (``data``, the webhook's ``data``: amounts as decimal strings), delivered under
    ``public_id`` on every channel."""

    class Type(models.TextChoices):
        KEY_THRESHOLD = "key.threshold_reached", "A key reached a share of its budget or cap"
        WALLET_BALANCE = "wallet.balance_below", "The wallet's balance is under its alert"
        WALLET_RUNWAY = "wallet.runway_below", "The wallet's runway is under its alert"
        TEST = "alert.test", "A test"

    # ``evt_`` + 24 hex digits: the webhook's ``id`` and ``Tollgate-Event-Id``.
    public_id = models.CharField(max_length=40, unique=True)
    tenant = models.ForeignKey("accounts.Tenant", on_delete=models.CASCADE, related_name="+")
    state = models.ForeignKey(
        AlertState, on_delete=models.SET_NULL, null=True, blank=True, related_name="events"
    )
    key = models.ForeignKey(
        "keys.ClientKey", on_delete=models.CASCADE, null=True, blank=True, related_name="+"
    )
    type = models.CharField(max_length=40, choices=Type.choices)
    data = models.JSONField(default=dict)
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"{self.type} {self.public_id}"


class AlertDelivery(models.Model):
    """An event on one channel. ``pending`` until its first try, ``retrying`` after a
    failed one (the next at ``next_attempt_at``), then ``sent`` or ``failed`` for good.
    ``locked_until``: a try is under way (its worker's lease), see ``alert_deliver``."""

    class Channel(models.TextChoices):
        EMAIL = "email", "Email"
        WEBHOOK = "webhook", "Webhook"

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        SENT = "sent", "Sent"
        RETRYING = "retrying", "Retrying"
        FAILED = "failed", "Failed"

    event = models.ForeignKey(AlertEvent, on_delete=models.CASCADE, related_name="deliveries")
    tenant = models.ForeignKey("accounts.Tenant", on_delete=models.CASCADE, related_name="+")
    channel = models.CharField(max_length=10, choices=Channel.choices)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    # Where the last try went: an email address or the webhook's URL.
    target = models.CharField(max_length=WEBHOOK_URL_MAX_LENGTH, blank=True, default="")
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.CharField(max_length=ERROR_MAX_LENGTH, blank=True, default="")
    http_status = models.PositiveSmallIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    locked_until = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-pk"]
        constraints = [
            # Never twice for one crossing: one delivery per event and channel.
            models.UniqueConstraint(fields=["event", "channel"], name="alert_delivery_unique"),
        ]
        indexes = [
            models.Index(fields=["tenant", "-created_at", "-id"], name="alert_delivery_tenant"),
            # The sweep reads the deliveries still to be tried.
            models.Index(
                fields=["next_attempt_at"],
                condition=Q(status__in=["pending", "retrying"]),
                name="alert_delivery_open",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.channel} of {self.event_id}: {self.status}"

    @property
    def is_open(self) -> bool:
        return self.status in (self.Status.PENDING, self.Status.RETRYING)

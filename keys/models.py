"""Client keys: a secret, a locked price ratio, a funding mode, and limits.

Money on a key (all nano-dollars; "client" amounts are in client prices, "cost" amounts in
what the reseller pays):

* prepaid: ``client_budget_nanos`` and ``cost_funded_nanos`` grow with creation and top-ups
  (the wallet was debited ``cost_funded_nanos``); ``cost_refunded_nanos`` went back to the
  wallet on deletion. The database enforces
  ``client_spent + client_reserved <= client_budget`` and
  ``cost_spent + cost_reserved + cost_refunded <= cost_funded``.
* wallet: nothing is set aside; each request reserves its cost in the wallet. An optional
  ``spend_cap_nanos`` (client prices) bounds ``period_client_spent_nanos``, which restarts
  at zero when ``period_index`` (see ``billing.periods``) moves on.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from django.db import models
from django.db.models import F, Q
from django.utils import timezone

from billing.models import KeyFunding
from billing.money import PriceRatio
from billing.periods import BudgetPeriod

if TYPE_CHECKING:
    from accounts.models import Tenant


class ClientKeyQuerySet(models.QuerySet["ClientKey"]):
    def for_tenant(self, tenant: Tenant | int) -> ClientKeyQuerySet:
        return self.filter(tenant=tenant)

    def visible(self) -> ClientKeyQuerySet:
        """Keys a reseller lists: everything but deleted ones."""
        return self.exclude(status=ClientKey.Status.DELETED)

    def sub_accounts(self) -> ClientKeyQuerySet:
        """What the sub-account API calls a sub-account: a wallet-funded key at price ratio
        1, so what its client is charged is what the reseller pays, and the API's one amount
        in cents is unambiguous."""
        return self.filter(
            funding=ClientKey.Funding.WALLET, ratio_cost_nanos=F("ratio_client_nanos")
        )


# A derived status (``ClientKey.effective_status``): an active key past its expiry time.
EXPIRED = "expired"

# A request's tag: the key's default tag or the request's own (``x-tollgate-tag``). One
# length for the key's column, the trace's column and every API that sets or filters a tag.
TAG_MAX_LENGTH = 100


class ClientKey(models.Model):
    # Metering's vocabulary, defined in billing (which never imports keys).
    Funding = KeyFunding
    BudgetPeriod = BudgetPeriod

    class Status(models.TextChoices):
        ACTIVE = "active", "Active"
        REVOKED = "revoked", "Revoked"
        DELETED = "deleted", "Deleted"

    tenant = models.ForeignKey(
        "accounts.Tenant", on_delete=models.PROTECT, related_name="client_keys"
    )
    # The tenant's wallet, kept on the key so metering needs no join.
    wallet = models.ForeignKey(
        "billing.Wallet", on_delete=models.PROTECT, related_name="client_keys"
    )
    label = models.CharField(max_length=200)
    prefix = models.CharField(max_length=16, unique=True)
    digest = models.CharField(max_length=64)
    last4 = models.CharField(max_length=4)
    default_tag = models.CharField(max_length=TAG_MAX_LENGTH, blank=True, default="")
    funding = models.CharField(max_length=10, choices=Funding.choices)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.ACTIVE)

    # The exact price ratio (your cost / client price), locked at creation.
    ratio_cost_nanos = models.BigIntegerField()
    ratio_client_nanos = models.BigIntegerField()

    client_budget_nanos = models.BigIntegerField(default=0)
    cost_funded_nanos = models.BigIntegerField(default=0)
    cost_refunded_nanos = models.BigIntegerField(default=0)
    client_spent_nanos = models.BigIntegerField(default=0)
    cost_spent_nanos = models.BigIntegerField(default=0)
    client_reserved_nanos = models.BigIntegerField(default=0)
    cost_reserved_nanos = models.BigIntegerField(default=0)

    spend_cap_nanos = models.BigIntegerField(null=True, blank=True)
    budget_period = models.CharField(
        max_length=10, choices=BudgetPeriod.choices, default=BudgetPeriod.NONE
    )
    period_index = models.BigIntegerField(default=0)
    period_client_spent_nanos = models.BigIntegerField(default=0)
    # The request id of the last reservation that took effect on this row: later statements
    # of the same reservation batch check it to know the key's update applied.
    hold_marker = models.CharField(max_length=64, blank=True, default="", editable=False)

    requests_per_minute = models.PositiveIntegerField(default=60)
    tokens_per_minute = models.PositiveIntegerField(null=True, blank=True)
    max_concurrency = models.PositiveIntegerField(default=5)
    allowed_models = models.JSONField(default=list, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)

    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)
    revoked_at = models.DateTimeField(null=True, blank=True)
    deleted_at = models.DateTimeField(null=True, blank=True)

    objects = ClientKeyQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-pk"]
        indexes = [models.Index(fields=["tenant", "status"])]
        constraints = [
            models.CheckConstraint(
                condition=Q(ratio_cost_nanos__gt=0)
                & Q(ratio_client_nanos__gte=F("ratio_cost_nanos")),
                name="key_ratio_valid",
            ),
            models.CheckConstraint(
                condition=Q(client_spent_nanos__gte=0)
                & Q(cost_spent_nanos__gte=0)
                & Q(client_reserved_nanos__gte=0)
                & Q(cost_reserved_nanos__gte=0)
                & Q(cost_refunded_nanos__gte=0)
                & Q(period_client_spent_nanos__gte=0),
                name="key_counters_non_negative",
            ),
            models.CheckConstraint(
                condition=Q(funding=KeyFunding.WALLET)
                | Q(client_budget_nanos__gte=F("client_spent_nanos") + F("client_reserved_nanos")),
                name="key_prepaid_client_budget_covers_use",
            ),
            models.CheckConstraint(
                condition=Q(funding=KeyFunding.WALLET)
                | Q(
                    cost_funded_nanos__gte=F("cost_spent_nanos")
                    + F("cost_reserved_nanos")
                    + F("cost_refunded_nanos")
                ),
                name="key_prepaid_cost_funding_covers_use",
            ),
            models.CheckConstraint(
                condition=Q(spend_cap_nanos__isnull=True) | Q(spend_cap_nanos__gte=0),
                name="key_spend_cap_non_negative",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.label} ({self.display_key})"

    @property
    def display_key(self) -> str:
        return f"{self.prefix}…{self.last4}"

    @property
    def ratio(self) -> PriceRatio:
        return PriceRatio(self.ratio_cost_nanos, self.ratio_client_nanos)

    @property
    def is_prepaid(self) -> bool:
        return self.funding == self.Funding.PREPAID

    def is_expired(self, now: datetime | None = None) -> bool:
        return self.expires_at is not None and self.expires_at <= (now or timezone.now())

    @property
    def effective_status(self) -> str:
        """What the API shows: ``expired`` is derived, never stored."""
        return self.status_shown(self.status, self.expires_at, timezone.now())

    @staticmethod
    def status_shown(status: str, expires_at: datetime | None, now: datetime) -> str:
        """``effective_status`` of a key read as plain values (a report of a thousand keys
        reads tuples, not model instances), at ``now``."""
        if status == ClientKey.Status.ACTIVE and expires_at is not None and expires_at <= now:
            return EXPIRED
        return status

    @property
    def profit_nanos(self) -> int:
        return self.client_spent_nanos - self.cost_spent_nanos

    @property
    def refundable_cost_nanos(self) -> int:
        """What deleting the key now gives back to the wallet: a prepaid key's funded cost
        not spent, not held by requests in flight (each refunds what it does not spend when
        it settles) and not refunded already; nothing for a wallet-funded key."""
        if not self.is_prepaid:
            return 0
        return (
            self.cost_funded_nanos
            - self.cost_spent_nanos
            - self.cost_reserved_nanos
            - self.cost_refunded_nanos
        )

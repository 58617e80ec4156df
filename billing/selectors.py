"""Reads for wallets, the ledger, routes and prices. Tenant-owned rows take the tenant."""

from __future__ import annotations

from datetime import datetime

from django.db.models import QuerySet, Sum
from django.utils import timezone

from accounts.models import Tenant
from billing.models import LedgerEntry, ModelPrice, ModelRoute, Wallet


def wallet_for_tenant(*, tenant: Tenant) -> Wallet:
    return Wallet.objects.get(tenant=tenant)


def ledger_entries(*, tenant: Tenant, kind: str | None = None) -> QuerySet[LedgerEntry]:
    """The tenant's ledger, newest first; only entries of ``kind`` when given."""
    entries = LedgerEntry.objects.filter(wallet__tenant=tenant)
    if kind is not None:
        entries = entries.filter(kind=kind)
    return entries.select_related("client_key").order_by("-id")


def routes_for_model(*, model: str) -> list[ModelRoute]:
    return list(
        ModelRoute.objects.filter(model=model, is_active=True, upstream__is_active=True)
        .select_related("upstream")
        .order_by("priority", "pk")
    )


def known_models() -> set[str]:
    return set(
        ModelRoute.objects.filter(is_active=True, upstream__is_active=True).values_list("model", flat=True)
    )


def price_current(*, route: ModelRoute, at: datetime | None = None) -> ModelPrice | None:
    """The price version in force for a route at ``at`` (now by default)."""
    return route.prices.filter(effective_from__lte=at or timezone.now()).order_by("-effective_from", "-pk").first()


def ledger_mismatches() -> list[tuple[int, int, int]]:
    """(wallet id, cached balance, sum of entries) for every wallet whose books disagree."""
    sums = dict(
        LedgerEntry.objects.values("wallet_id").annotate(total=Sum("amount_nanos")).values_list("wallet_id", "total")
    )
    return [
        (wallet_id, balance, int(sums.get(wallet_id) or 0))
        for wallet_id, balance in Wallet.objects.values_list("id", "balance_nanos")
        if balance != int(sums.get(wallet_id) or 0)
    ]

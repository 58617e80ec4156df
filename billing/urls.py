"""Wallet endpoints under ``/api/v1/``."""

from __future__ import annotations

from django.urls import path

from billing.apis import (
    LedgerEntryListApi,
    TopUpCreateApi,
    TopUpDetailApi,
    TopUpListApi,
    WalletDetailApi,
)
from config.routing import by_method

urlpatterns = [
    path("wallet", WalletDetailApi.as_view(), name="wallet-detail"),
    path("wallet/ledger", LedgerEntryListApi.as_view(), name="ledger-entry-list"),
    path(
        "wallet/top-ups",
        by_method(GET=TopUpListApi.as_view(), POST=TopUpCreateApi.as_view()),
        name="top-up-list",
    ),
    path("wallet/top-ups/<int:top_up_id>", TopUpDetailApi.as_view(), name="top-up-detail"),
]

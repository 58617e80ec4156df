"""Wallet endpoints under ``/api/v1/``."""

from __future__ import annotations

from django.urls import path

from billing.apis import LedgerEntryListApi, WalletDetailApi

urlpatterns = [
    path("wallet", WalletDetailApi.as_view(), name="wallet-detail"),
    path("wallet/ledger", LedgerEntryListApi.as_view(), name="ledger-entry-list"),
]

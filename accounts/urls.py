"""The account endpoint under ``/api/v1/``."""

from __future__ import annotations

from django.urls import path

from accounts.apis import AccountDetailApi, AccountUpdateApi
from config.routing import by_method

urlpatterns = [
    path(
        "account",
        by_method(GET=AccountDetailApi.as_view(), PATCH=AccountUpdateApi.as_view()),
        name="account",
    ),
]

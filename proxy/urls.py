"""URLs of the trace reports (under ``/api/v1/``) and of the sub-account API (under ``/v1/``).

The sub-account paths are plain Django: the proxy's ASGI router takes only its own model
paths (``proxy.asgi.ROUTES``) and hands every other ``/v1/`` path to Django.
"""

from __future__ import annotations

from django.urls import path

from keys.urls import by_method
from proxy.apis.reports import EarningsApi, KeyUsageApi, TagUsageApi, TraceListApi
from proxy.apis.sub_accounts import (
    SubAccountCreateApi,
    SubAccountDeleteApi,
    SubAccountDetailApi,
    SubAccountListApi,
    SubAccountTagUsageApi,
    SubAccountUpdateApi,
    SubAccountUsageApi,
)

urlpatterns = [
    path("keys/<int:key_id>/requests", TraceListApi.as_view(), name="key-requests"),
    path("keys/<int:key_id>/usage", KeyUsageApi.as_view(), name="key-usage"),
    path("usage/by-tag", TagUsageApi.as_view(), name="usage-by-tag"),
    path("earnings", EarningsApi.as_view(), name="earnings"),
]

sub_account_urlpatterns = [
    path(
        "sub-accounts",
        by_method(GET=SubAccountListApi.as_view(), POST=SubAccountCreateApi.as_view()),
        name="sub-account-list",
    ),
    path(
        "sub-accounts/<int:key_id>",
        by_method(
            GET=SubAccountDetailApi.as_view(),
            PATCH=SubAccountUpdateApi.as_view(),
            DELETE=SubAccountDeleteApi.as_view(),
        ),
        name="sub-account-detail",
    ),
    path(
        "sub-accounts/<int:key_id>/usage",
        SubAccountUsageApi.as_view(),
        name="sub-account-usage",
    ),
    path("usage/by-tag", SubAccountTagUsageApi.as_view(), name="sub-account-usage-by-tag"),
]

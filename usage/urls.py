"""URLs of the usage reports: under ``/api/v1/`` (``urlpatterns``) and in the sub-account API
under ``/v1/`` (``sub_account_urlpatterns``; the sub-accounts themselves are ``keys.urls``)."""

from __future__ import annotations

from django.urls import path

from config.routing import by_method
from usage.apis import (
    EarningsApi,
    KeyStatementApi,
    KeyTracesDeleteApi,
    KeyUsageApi,
    RequestListApi,
    SubAccountTagUsageApi,
    SubAccountUsageApi,
    TagUsageApi,
    TenantUsageApi,
    TraceListApi,
)

urlpatterns = [
    path(
        "keys/<int:key_id>/requests",
        by_method(GET=TraceListApi.as_view(), DELETE=KeyTracesDeleteApi.as_view()),
        name="key-requests",
    ),
    path("keys/<int:key_id>/usage", KeyUsageApi.as_view(), name="key-usage"),
    path(
        "keys/<int:key_id>/statements/<str:month>",
        KeyStatementApi.as_view(),
        name="key-statement",
    ),
    path("requests", RequestListApi.as_view(), name="requests"),
    path("usage", TenantUsageApi.as_view(), name="usage"),
    path("usage/by-tag", TagUsageApi.as_view(), name="usage-by-tag"),
    path("earnings", EarningsApi.as_view(), name="earnings"),
]

sub_account_urlpatterns = [
    path(
        "sub-accounts/<int:key_id>/usage",
        SubAccountUsageApi.as_view(),
        name="sub-account-usage",
    ),
    path("usage/by-tag", SubAccountTagUsageApi.as_view(), name="sub-account-usage-by-tag"),
]

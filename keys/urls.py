"""Key endpoints under ``/api/v1/`` and the sub-account API's lifecycle under ``/v1/``
(``sub_account_urlpatterns``). One APIView per operation (house rule 15), so a path that
serves several methods dispatches to the view for each (``config.routing.by_method``).

The sub-account paths are plain Django: the proxy's ASGI router takes only its own model
paths (``proxy.asgi.ROUTES``) and hands every other ``/v1/`` path to Django.
"""

from __future__ import annotations

from django.urls import path

from config.routing import by_method
from keys.apis.keys import (
    KeyCreateApi,
    KeyDeleteApi,
    KeyDetailApi,
    KeyListApi,
    KeyTopUpApi,
    KeyUpdateApi,
)
from keys.apis.sub_accounts import (
    SubAccountCreateApi,
    SubAccountDeleteApi,
    SubAccountDetailApi,
    SubAccountListApi,
    SubAccountUpdateApi,
)

urlpatterns = [
    path(
        "keys",
        by_method(GET=KeyListApi.as_view(), POST=KeyCreateApi.as_view()),
        name="key-list",
    ),
    path(
        "keys/<int:key_id>",
        by_method(
            GET=KeyDetailApi.as_view(),
            PATCH=KeyUpdateApi.as_view(),
            DELETE=KeyDeleteApi.as_view(),
        ),
        name="key-detail",
    ),
    path("keys/<int:key_id>/top-up", KeyTopUpApi.as_view(), name="key-top-up"),
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
]

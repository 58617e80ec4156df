"""Key endpoints under ``/api/v1/`` and the sub-account API's lifecycle under ``/v1/``
(``sub_account_urlpatterns``). One APIView per operation (house rule 15), so a path that
serves several methods dispatches to the view for each.

The sub-account paths are plain Django: the proxy's ASGI router takes only its own model
paths (``proxy.asgi.ROUTES``) and hands every other ``/v1/`` path to Django.
"""

from __future__ import annotations

from collections.abc import Callable
from http import HTTPStatus

from django.http import HttpRequest, HttpResponseBase
from django.urls import path
from django.views.decorators.csrf import csrf_exempt

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

View = Callable[..., HttpResponseBase]


def by_method(**views: View) -> View:
    """A view that hands each HTTP method to its own APIView.

    Other methods go to the GET view (else the first), so DRF still authenticates before
    it answers 405 (or OPTIONS); the ``Allow`` header of either then lists the methods of
    the whole path, not only that view's.
    """
    fallback = views.get("GET") or next(iter(views.values()))
    allowed = ", ".join([*views, "OPTIONS"])

    # Safe: every target is a DRF APIView, which exempts itself and authenticates by token.
    @csrf_exempt
    def view(request: HttpRequest, *args: object, **kwargs: object) -> HttpResponseBase:
        response = views.get(request.method or "", fallback)(request, *args, **kwargs)
        if response.status_code == HTTPStatus.METHOD_NOT_ALLOWED or request.method == "OPTIONS":
            response["Allow"] = allowed
        return response

    # config.openapi documents each method of the path from its own view.
    view.views_by_method = views  # type: ignore[attr-defined]
    return view


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

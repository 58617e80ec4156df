"""The site's URLs and error handlers (``config.urls``), plus views that fail on purpose, for
``tests/test_errors.py``: how a crash or a refusal is answered depends on the path alone."""

from __future__ import annotations

from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.urls import path
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from config.urls import handler400, handler403, handler404, handler500, urlpatterns

__all__ = ["handler400", "handler403", "handler404", "handler500", "urlpatterns"]


class Crash(Exception):
    pass


def crash(request: HttpRequest) -> HttpResponse:
    raise Crash("a bug")


def forbidden(request: HttpRequest) -> HttpResponse:
    raise PermissionDenied


class CrashingApi(APIView):
    """A REST API view with a bug: DRF hands what it does not know on to Django."""

    authentication_classes = ()
    permission_classes = ()

    def get(self, request: Request) -> Response:
        raise Crash("a bug")


urlpatterns = [
    path("api/v1/crash", CrashingApi.as_view()),
    path("api/v1/plain-crash", crash),
    path("api/v1/forbidden", forbidden),
    path("v1/sub-accounts/crash", crash),
    path("v1/crash", crash),
    path("v1/messages/crash", crash),
    path("v1/forbidden", forbidden),
    path("crash", crash),
    path("forbidden", forbidden),
    *urlpatterns,
]

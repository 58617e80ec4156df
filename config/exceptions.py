"""Where errors become HTTP answers: domain exceptions on the REST API, and every error
Django answers itself under ``/api/`` and ``/v1/``.

Shapes, by surface:

* the REST API (``/api/``) and the sub-account API (``/v1/sub-accounts``, ``/v1/usage``):
  field errors are ``{"field": ["message"]}`` (DRF's own), everything else is
  ``{"detail": "message", "code": "machine_code"}``, DRF's own errors included;
* the proxy's other ``/v1/`` paths: the wire format's own error (OpenAI's
  ``{"error": {"message", "type", "code"}}``, Anthropic's on ``/v1/messages``), as the
  proxy answers itself (``proxy.wire.error_wire``).

The proxy's router (``proxy.asgi``) answers its own paths, a wrong method included (405);
every other path reaches Django, where an unknown one is a 404 and a crash a 500 through
``handler404``/``handler500`` (``config.urls``): those answer in the shapes above under the
two prefixes, and Django's pages elsewhere. With ``DEBUG`` on, Django shows its debug pages
instead, as it does for every path.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ObjectDoesNotExist
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views import defaults
from rest_framework import status
from rest_framework.exceptions import APIException
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from accounts.exceptions import AccountError, TenantInvalid
from alerts.exceptions import AlertSettingsInvalid, KeyAlertsConflict
from billing.exceptions import (
    BillingError,
    InsufficientFunds,
    TopUpCheckoutFailed,
    TopUpInvalid,
    TopUpsNotConfigured,
)
from billing.money import MoneyError
from keys.exceptions import ClientKeyInvalid, ClientKeyStateConflict
from proxy.wire import error_wire

# The paths under /v1/ that are the sub-account API (``sub_account_urlpatterns`` of keys.urls
# and usage.urls), not the proxy's model traffic: they answer in the REST API's shape.
SUB_ACCOUNT_API_ROOTS = ("/v1/sub-accounts", "/v1/usage")


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, ObjectDoesNotExist):
        return Response(
            {"detail": "Not found.", "code": "not_found"}, status=status.HTTP_404_NOT_FOUND
        )
    if isinstance(exc, ClientKeyInvalid | TenantInvalid | AlertSettingsInvalid):
        return Response({exc.field: [str(exc)]}, status=status.HTTP_400_BAD_REQUEST)
    if isinstance(exc, MoneyError):
        return Response(
            {"detail": str(exc), "code": "invalid_amount"}, status=status.HTTP_400_BAD_REQUEST
        )
    if isinstance(exc, InsufficientFunds):
        return Response(
            {"detail": str(exc), "code": exc.code}, status=status.HTTP_402_PAYMENT_REQUIRED
        )
    if isinstance(exc, TopUpInvalid):
        return Response({exc.field: [str(exc)]}, status=status.HTTP_400_BAD_REQUEST)
    if isinstance(exc, TopUpCheckoutFailed):
        return Response({"detail": str(exc), "code": exc.code}, status=status.HTTP_502_BAD_GATEWAY)
    if isinstance(exc, TopUpsNotConfigured):
        return Response(
            {"detail": str(exc), "code": exc.code}, status=status.HTTP_503_SERVICE_UNAVAILABLE
        )
    if isinstance(exc, ClientKeyStateConflict | KeyAlertsConflict):
        return Response({"detail": str(exc), "code": exc.code}, status=status.HTTP_409_CONFLICT)
    if isinstance(exc, BillingError | AccountError):
        return Response(
            {"detail": str(exc), "code": getattr(exc, "code", "error")},
            status=status.HTTP_400_BAD_REQUEST,
        )
    response = drf_exception_handler(exc, context)
    if (
        response is not None
        and isinstance(exc, APIException)
        and isinstance(response.data, dict)
        and set(response.data) == {"detail"}
    ):
        # DRF's own errors (401, 404, 405, 415, 429, a body that is not JSON) carry their
        # code too ("not_authenticated", "parse_error", …), as ours do.
        response.data["code"] = exc.get_codes()
    return response


# --------------------------------------------------- what Django answers under the prefixes


def _under(path: str, root: str) -> bool:
    return path == root or path.startswith(root + "/")


def _is_rest_api(path: str) -> bool:
    return _under(path, "/api") or any(_under(path, root) for root in SUB_ACCOUNT_API_ROOTS)


def _api_error(request: HttpRequest, status_code: int, message: str, code: str) -> HttpResponse:
    """The error in the shape of the surface ``request`` reached (see the module's doc)."""
    path = request.path_info
    if _is_rest_api(path):
        return JsonResponse({"detail": message, "code": code}, status=status_code)
    wire = error_wire(path, request.headers)
    return HttpResponse(
        wire.error_body(status_code, message, code),
        status=status_code,
        content_type="application/json",
    )


def _is_api(request: HttpRequest) -> bool:
    return _under(request.path_info, "/api") or _under(request.path_info, "/v1")


def bad_request(request: HttpRequest, exception: Exception) -> HttpResponse:
    if _is_api(request):
        return _api_error(request, 400, "Bad request.", "bad_request")
    return defaults.bad_request(request, exception)


def permission_denied(request: HttpRequest, exception: Exception) -> HttpResponse:
    if _is_api(request):
        return _api_error(request, 403, "Permission denied.", "permission_denied")
    return defaults.permission_denied(request, exception)


def not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    if _is_api(request):
        return _api_error(
            request, 404, f"No such path: {request.method} {request.path_info}.", "not_found"
        )
    return defaults.page_not_found(request, exception)


def server_error(request: HttpRequest) -> HttpResponse:
    if _is_api(request):
        return _api_error(request, 500, "Internal server error.", "server_error")
    return defaults.server_error(request)

"""One place where domain exceptions become HTTP errors for the REST API.

Shapes: field errors are ``{"field": ["message"]}`` (DRF's own), everything else is
``{"detail": "message", "code": "machine_code"}``.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ObjectDoesNotExist
from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from accounts.exceptions import AccountError
from billing.exceptions import BillingError, InsufficientFunds
from billing.money import MoneyError
from keys.exceptions import ClientKeyInvalid, ClientKeyStateConflict


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, ObjectDoesNotExist):
        return Response(
            {"detail": "Not found.", "code": "not_found"}, status=status.HTTP_404_NOT_FOUND
        )
    if isinstance(exc, ClientKeyInvalid):
        return Response({exc.field: [str(exc)]}, status=status.HTTP_400_BAD_REQUEST)
    if isinstance(exc, MoneyError):
        return Response(
            {"detail": str(exc), "code": "invalid_amount"}, status=status.HTTP_400_BAD_REQUEST
        )
    if isinstance(exc, InsufficientFunds):
        return Response(
            {"detail": str(exc), "code": exc.code}, status=status.HTTP_402_PAYMENT_REQUIRED
        )
    if isinstance(exc, ClientKeyStateConflict):
        return Response({"detail": str(exc), "code": exc.code}, status=status.HTTP_409_CONFLICT)
    if isinstance(exc, BillingError | AccountError):
        return Response(
            {"detail": str(exc), "code": getattr(exc, "code", "error")},
            status=status.HTTP_400_BAD_REQUEST,
        )
    return drf_exception_handler(exc, context)

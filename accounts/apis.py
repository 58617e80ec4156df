"""Reseller REST API for the account itself (``/api/v1/account``): what the tenant's clients
see of it and the time zone of its reports. Validate → service → serialize, nothing else;
the caller's tenant is the one its token belongs to, so no other tenant is reachable."""

from __future__ import annotations

from django.core.validators import EmailValidator
from drf_spectacular.utils import OpenApiExample, extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.authentication import request_actor, request_tenant
from accounts.models import (
    SUPPORT_EMAIL_MAX_LENGTH,
    TENANT_NAME_MAX_LENGTH,
    ZONE_NAME_MAX_LENGTH,
    zone_validate,
)
from accounts.services import tenant_update
from config.openapi import error_responses
from config.serializers import StrictCharField, StrictInputSerializer


class AccountOutputSerializer(serializers.Serializer):
    """The account object; its instance is the ``Tenant``."""

    id = serializers.IntegerField()
    display_name = serializers.CharField(
        source="name", help_text="The name the account's clients see."
    )
    support_email = serializers.CharField(
        help_text="Where the account's clients write with questions; blank for none."
    )
    timezone = serializers.CharField(
        help_text="The IANA time zone of the account's reports (their days and months)."
    )
    created_at = serializers.DateTimeField()


class AccountDetailApi(APIView):
    """``GET /api/v1/account``: the caller's account."""

    @extend_schema(
        summary="Read the account",
        tags=["account"],
        responses={200: AccountOutputSerializer, **error_responses()},
    )
    def get(self, request: Request) -> Response:
        return Response(AccountOutputSerializer(request_tenant(request)).data)


class AccountUpdateApi(APIView):
    """``PATCH /api/v1/account``: change the display name, support email or time zone.

    Only the fields sent change; any other field is a 400 naming it.
    """

    class InputSerializer(StrictInputSerializer):
        display_name = StrictCharField(
            max_length=TENANT_NAME_MAX_LENGTH,
            required=False,
            help_text="The name the account's clients see; not blank.",
        )
        support_email = StrictCharField(
            max_length=SUPPORT_EMAIL_MAX_LENGTH,
            allow_blank=True,
            required=False,
            validators=[EmailValidator(message="Enter a valid email address.")],
            help_text="An email address, or blank for none.",
        )
        timezone = StrictCharField(
            max_length=ZONE_NAME_MAX_LENGTH,
            required=False,
            validators=[zone_validate],
            help_text="An IANA time zone name, e.g. Europe/Paris or Asia/Kolkata.",
        )

    @extend_schema(
        summary="Change the account",
        tags=["account"],
        request=InputSerializer,
        examples=[
            OpenApiExample(
                "Reports in Indian time",
                value={"timezone": "Asia/Kolkata", "support_email": "help@example.com"},
                request_only=True,
            ),
        ],
        responses={200: AccountOutputSerializer, **error_responses(400)},
    )
    def patch(self, request: Request) -> Response:
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        tenant = tenant_update(
            tenant=request_tenant(request),
            actor=request_actor(request),
            **serializer.validated_data,
        )
        return Response(AccountOutputSerializer(tenant).data)

"""Reseller REST API for the wallet and its ledger: read-only, always the caller's tenant."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.authentication import request_tenant
from billing.models import LedgerEntry, Wallet
from billing.selectors import ledger_entries, wallet_for_tenant
from billing.serializers import CURRENCY, UsdField
from config.openapi import PAGE_PARAMETERS, error_responses, paginated
from config.pagination import Pagination
from config.serializers import StrictQuerySerializer


class WalletDetailApi(APIView):
    """``GET /api/v1/wallet``: balance, what in-flight requests hold, and what is left."""

    class OutputSerializer(serializers.Serializer):
        balance = UsdField(source="balance_nanos")
        reserved = UsdField(source="reserved_nanos")
        available = UsdField(source="available_nanos")
        currency = serializers.SerializerMethodField()

        def get_currency(self, wallet: Wallet) -> str:
            return CURRENCY

    @extend_schema(
        summary="The wallet",
        tags=["wallet"],
        responses={200: OutputSerializer, **error_responses()},
    )
    def get(self, request: Request) -> Response:
        wallet = wallet_for_tenant(tenant=request_tenant(request))
        return Response(self.OutputSerializer(wallet).data)


class LedgerEntryListApi(APIView):
    """``GET /api/v1/wallet/ledger``: every balance change, newest first, paginated;
    ``?kind=`` keeps one kind. Amounts are signed: debits are negative."""

    class FilterSerializer(StrictQuerySerializer):
        kind = serializers.ChoiceField(choices=LedgerEntry.Kind.choices, required=False)

    class OutputSerializer(serializers.Serializer):
        id = serializers.IntegerField()
        kind = serializers.CharField()
        amount = UsdField(source="amount_nanos")
        balance_after = UsdField(source="balance_after_nanos")
        reason = serializers.CharField()
        reference = serializers.CharField()
        key_id = serializers.IntegerField(source="client_key_id", allow_null=True)
        created_at = serializers.DateTimeField()

    @extend_schema(
        summary="The wallet's ledger",
        tags=["wallet"],
        parameters=[FilterSerializer, *PAGE_PARAMETERS],
        responses={200: paginated(OutputSerializer), **error_responses(400, 404)},
    )
    def get(self, request: Request) -> Response:
        filters = self.FilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        entries = ledger_entries(
            tenant=request_tenant(request), kind=filters.validated_data.get("kind")
        )
        paginator = Pagination()
        page = paginator.paginate_queryset(entries, request, view=self)
        return paginator.get_paginated_response(self.OutputSerializer(page, many=True).data)

"""``manage.py credit_wallet EMAIL AMOUNT --reason TEXT [--kind …] [--idempotency-key K]``."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from accounts.models import Tenant
from accounts.selectors import tenant_get_by_owner_email
from billing.exceptions import BillingError
from billing.models import LedgerEntry
from billing.money import MoneyError, format_usd, parse_usd
from billing.selectors import wallet_for_tenant
from billing.services import wallet_credit

KINDS = [LedgerEntry.Kind.MANUAL_CREDIT.value, LedgerEntry.Kind.ADJUSTMENT.value]


class Command(BaseCommand):
    help = (
        "Post a manual credit (or a signed adjustment) to a reseller's wallet. "
        "AMOUNT is in USD, e.g. 100 or 12.50; an adjustment may be negative."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("email", help="The reseller's owner email.")
        parser.add_argument("amount", help="USD, at most 9 decimal places.")
        parser.add_argument("--reason", required=True, help="Why (kept in the ledger).")
        parser.add_argument("--kind", choices=KINDS, default=LedgerEntry.Kind.MANUAL_CREDIT.value)
        parser.add_argument(
            "--idempotency-key", help="Re-running with the same key posts nothing new."
        )
        parser.add_argument("--json", action="store_true", help="Print one JSON object.")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            amount_nanos = parse_usd(options["amount"])
        except MoneyError as exc:
            raise CommandError(f"Invalid amount {options['amount']!r}: {exc}.") from exc
        reason = options["reason"].strip()
        if not reason:
            raise CommandError("--reason cannot be blank.")
        try:
            tenant = tenant_get_by_owner_email(email=options["email"].strip())
        except Tenant.DoesNotExist as exc:
            raise CommandError(f"No reseller with email {options['email']}.") from exc
        except Tenant.MultipleObjectsReturned as exc:
            raise CommandError(f"{options['email']} owns several tenants.") from exc
        try:
            entry = wallet_credit(
                tenant=tenant,
                amount_nanos=amount_nanos,
                reason=reason,
                kind=options["kind"],
                reference="manage.py credit_wallet",
                idempotency_key=options["idempotency_key"] or None,
            )
        except BillingError as exc:
            raise CommandError(str(exc)) from exc
        balance = wallet_for_tenant(tenant=tenant).balance_nanos
        if options["json"]:
            payload = {
                "tenant_id": tenant.pk,
                "entry_id": entry.pk,
                "amount": format_usd(entry.amount_nanos),
                "balance": format_usd(balance),
            }
            self.stdout.write(json.dumps(payload))
            return
        self.stdout.write(
            f"Posted {entry.get_kind_display().lower()} of {format_usd(entry.amount_nanos)} USD "
            f"to {tenant.name} (entry {entry.pk}); balance {format_usd(balance)} USD."
        )

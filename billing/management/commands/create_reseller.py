"""``manage.py create_reseller EMAIL [--password P] [--name NAME] [--json]``."""

from __future__ import annotations

import json
from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.core.validators import validate_email

from accounts.exceptions import EmailTaken
from billing.services import reseller_open


class Command(BaseCommand):
    help = "Create a reseller (user, tenant, empty wallet) and print its first API token once."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("email")
        parser.add_argument(
            "--password", help="Dashboard password (default: none; the API token still works)."
        )
        parser.add_argument("--name", default="", help="Tenant name (default: the email).")
        parser.add_argument("--json", action="store_true", help="Print one JSON object.")

    def handle(self, *args: Any, **options: Any) -> None:
        email = options["email"].strip()
        try:
            validate_email(email)
        except ValidationError as exc:
            raise CommandError(f"{email!r} is not a valid email address.") from exc
        try:
            tenant, issued = reseller_open(
                email=email, password=options["password"], name=options["name"].strip()
            )
        except EmailTaken as exc:
            raise CommandError(f"A user with email {email} already exists.") from exc
        if options["json"]:
            payload = {
                "id": tenant.pk,
                "tenant_id": tenant.pk,
                "user_id": tenant.owner_id,
                "email": tenant.owner.email,
                "api_token": issued.secret,
            }
            self.stdout.write(json.dumps(payload))
            return
        self.stdout.write(f"Created reseller {tenant.name} (tenant id {tenant.pk}).")
        self.stdout.write(f"API token (shown once, keep it safe): {issued.secret}")

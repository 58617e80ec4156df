"""What ``deactivate_reseller`` and ``activate_reseller`` share: find the reseller by its
owner's email, call one service, report (with the client keys that stop or come back,
hence here in keys: accounts imports no other app)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.core.management.base import BaseCommand, CommandError, CommandParser

from accounts.models import Tenant
from accounts.selectors import tenant_get_by_owner_email
from accounts.services import TenantActivation
from keys.models import ClientKey


class TenantActivationCommand(BaseCommand):
    service: Callable[..., TenantActivation]
    # "suspended" / "reinstated": what the service does, for the report.
    done: str
    consequence: str

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("email", help="The reseller's owner email.")
        parser.add_argument("--json", action="store_true", help="Print one JSON object.")

    def handle(self, *args: Any, **options: Any) -> None:
        email = options["email"].strip()
        try:
            tenant = tenant_get_by_owner_email(email=email)
        except Tenant.DoesNotExist as exc:
            raise CommandError(f"No reseller with email {email}.") from exc
        except Tenant.MultipleObjectsReturned as exc:
            raise CommandError(f"{email} owns several tenants.") from exc
        actor: AbstractBaseUser | None = None  # the operator at the shell
        result = self.service(tenant=tenant, actor=actor)
        # The keys that stop or come back with the tenant (the others stay as they are).
        active_keys = (
            ClientKey.objects.for_tenant(tenant).filter(status=ClientKey.Status.ACTIVE).count()
        )
        if options["json"]:
            payload = {
                "tenant_id": tenant.pk,
                "email": tenant.owner.email,
                "is_active": result.tenant.is_active,
                "changed": result.changed,
                "active_keys": active_keys,
            }
            self.stdout.write(json.dumps(payload))
            return
        if not result.changed:
            self.stdout.write(f"{tenant.name} (tenant id {tenant.pk}) was already {self.done}.")
            return
        self.stdout.write(
            f"{self.done.capitalize()} {tenant.name} (tenant id {tenant.pk}): its API tokens "
            f"and {active_keys} active client key(s) {self.consequence}."
        )

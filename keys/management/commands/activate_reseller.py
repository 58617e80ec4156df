"""``manage.py activate_reseller EMAIL [--json]``."""

from __future__ import annotations

from accounts.services import tenant_reinstate
from keys.management.tenant_activation import TenantActivationCommand


class Command(TenantActivationCommand):
    help = (
        "Lift a reseller's suspension (deactivate_reseller): its API tokens and the client "
        "keys that were active work again; revoked keys stay revoked."
    )
    service = staticmethod(tenant_reinstate)
    done = "reinstated"
    consequence = "work again"

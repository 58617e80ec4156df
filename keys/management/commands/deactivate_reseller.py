"""``manage.py deactivate_reseller EMAIL [--json]``."""

from __future__ import annotations

from accounts.services import tenant_suspend
from keys.management.tenant_activation import TenantActivationCommand


class Command(TenantActivationCommand):
    help = (
        "Suspend a reseller: its API tokens and client keys answer 401 at once, on every "
        "proxy worker. Keys keep their own status and no money moves; activate_reseller "
        "lifts it."
    )
    service = staticmethod(tenant_suspend)
    done = "suspended"
    consequence = "now answer 401"

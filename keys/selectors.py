"""Tenant-scoped reads of client keys. The only road to a tenant's key."""

from __future__ import annotations

from django.db.models import QuerySet

from accounts.models import Tenant
from keys.hashing import secret_matches, secret_prefix
from keys.models import ClientKey


def key_list(*, tenant: Tenant, include_deleted: bool = False) -> QuerySet[ClientKey]:
    keys = ClientKey.objects.for_tenant(tenant)
    return keys if include_deleted else keys.visible()


def key_get(*, tenant: Tenant, key_id: int) -> ClientKey:
    """The tenant's key, deleted or not; another tenant's id raises DoesNotExist (404)."""
    return ClientKey.objects.for_tenant(tenant).get(pk=key_id)


def key_authenticate(*, secret: str) -> ClientKey | None:
    """The key with this secret (any status: the caller decides what a status means)."""
    key = ClientKey.objects.filter(prefix=secret_prefix(secret)).first()
    if key is None or not secret_matches(secret, key.digest):
        return None
    return key

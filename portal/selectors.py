"""What the portal reads: a client's bound keys, each only through the client's binding.

Figures of a key are shown in *client* prices only; the reseller's cost, ratio, margin and
profit are never read into a portal page (``portal.figures`` turns the domain's reports
into the client's view of them).
"""

from __future__ import annotations

from django.db.models import QuerySet
from django.http import Http404

from portal.models import PortalBinding, PortalClient


def bindings_for_client(*, client: PortalClient) -> QuerySet[PortalBinding]:
    """The client's bindings, oldest first, with their keys and the keys' resellers."""
    return PortalBinding.objects.filter(client=client).select_related("key", "key__tenant")


def binding_get(*, client: PortalClient, key_id: int) -> PortalBinding:
    """The client's binding of key ``key_id`` (deleted keys too: their history stays
    readable); a key the client has not bound, whoever's it is, raises Http404."""
    binding = bindings_for_client(client=client).filter(key_id=key_id).first()
    if binding is None:
        raise Http404("No such key.")
    return binding

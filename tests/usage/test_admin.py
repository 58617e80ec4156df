"""The operator's admin for traces: read-only, and settlements over the hold counted in
all and per upstream (the proxy writing such traces is tested in
``tests/proxy/test_output_bound.py``)."""

from __future__ import annotations

from typing import Any

import pytest
from django.urls import reverse

from billing.models import Upstream
from billing.services import upstream_save
from tests.keys.factories import WalletKeyFactory
from tests.usage.factories import TraceFactory

pytestmark = pytest.mark.usefixtures("books_balance")

CHANGELIST = "admin:usage_trace_changelist"


@pytest.fixture
def traces(tenant: Any, outsider: Any) -> dict[str, Any]:
    """Over the hold: two on one upstream, one on another, one on an upstream since
    deleted; and two settled within their holds."""
    key = WalletKeyFactory.create(tenant=tenant)
    other_key = WalletKeyFactory.create(tenant=outsider[0])
    vllm = upstream_save(name="vllm", kind="openai", base_url="http://10.0.0.5:8000/v1")
    llama = upstream_save(name="llama", kind="openai", base_url="http://10.0.0.6:8080/v1")
    gone = upstream_save(name="gone", kind="openai", base_url="http://10.0.0.7:8080/v1")
    made: dict[str, Any] = {
        "vllm-1": TraceFactory.create(client_key=key, upstream=vllm, is_over_hold=True),
        "vllm-2": TraceFactory.create(client_key=other_key, upstream=vllm, is_over_hold=True),
        "llama": TraceFactory.create(client_key=key, upstream=llama, is_over_hold=True),
        "gone": TraceFactory.create(client_key=key, upstream=gone, is_over_hold=True),
        "within-1": TraceFactory.create(client_key=key, upstream=vllm),
        "within-2": TraceFactory.create(client_key=key, upstream=llama),
    }
    for name in ("vllm-1", "vllm-2", "llama", "gone"):
        made[name].overrun_cost_nanos = 1_234_567
        made[name].save(update_fields=["overrun_cost_nanos"])
    Upstream.objects.filter(pk=gone.pk).delete()
    made["upstreams"] = {"vllm": vllm, "llama": llama}
    return made


def shown(page: str, traces: dict[str, Any]) -> set[str]:
    return {name for name, t in traces.items() if name != "upstreams" and t.request_id in page}


def test_the_filter_counts_settlements_over_the_hold_in_all_and_per_upstream(
    admin_client: Any, traces: dict[str, Any]
) -> None:
    page = admin_client.get(reverse(CHANGELIST)).content.decode()
    assert "Any upstream (4)" in page
    assert "vllm (2)" in page and "llama (1)" in page and "A deleted upstream (1)" in page
    assert shown(page, traces) == {"vllm-1", "vllm-2", "llama", "gone", "within-1", "within-2"}
    assert "0.001234567" in page  # the uncharged cost, in USD

    def filtered(value: str) -> set[str]:
        response = admin_client.get(reverse(CHANGELIST), {"over_hold": value})
        assert response.status_code == 200
        return shown(response.content.decode(), traces)

    assert filtered("any") == {"vllm-1", "vllm-2", "llama", "gone"}
    assert filtered(str(traces["upstreams"]["vllm"].pk)) == {"vllm-1", "vllm-2"}
    assert filtered(str(traces["upstreams"]["llama"].pk)) == {"llama"}
    assert filtered("none") == {"gone"}
    assert filtered("nonsense") == set()


def test_traces_are_read_only(admin_client: Any, traces: dict[str, Any]) -> None:
    trace = traces["vllm-1"]
    change = reverse("admin:usage_trace_change", args=[trace.pk])
    assert admin_client.get(change).status_code == 200
    assert admin_client.post(change, {"is_over_hold": ""}).status_code == 403
    assert admin_client.get(reverse("admin:usage_trace_add")).status_code == 403
    delete = reverse("admin:usage_trace_delete", args=[trace.pk])
    assert admin_client.post(delete, {"post": "yes"}).status_code == 403
    trace.refresh_from_db()
    assert trace.is_over_hold

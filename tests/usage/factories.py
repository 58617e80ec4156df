"""Trace rows for tests of the reports: written here directly, as the proxy would batch them
(the proxy's own writing is tested through the real server elsewhere)."""

from __future__ import annotations

import factory
from factory.django import DjangoModelFactory

from usage.models import Trace


class TraceFactory(DjangoModelFactory[Trace]):
    """``TraceFactory(client_key=k, cost_nanos=…, client_nanos=…)``: a completed request."""

    class Meta:
        model = Trace

    client_key = None  # required: every trace belongs to a key (and so to its tenant)
    tenant = factory.LazyAttribute(lambda o: o.client_key.tenant)
    request_id = factory.Sequence(lambda n: f"req-{n:08d}")
    endpoint = "chat.completions"
    model = "mock-gpt"
    tag = factory.LazyAttribute(lambda o: o.client_key.default_tag)
    status = Trace.Status.OK
    status_code = 200
    latency_ms = 120
    ttft_ms = 40

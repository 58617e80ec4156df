"""A request export through the real server (``python -m config.serve``, uvicorn, ASGI):
every row arrives, page after page, while the answer is still being written."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from datetime import timedelta

import httpx
import pytest
from django.utils import timezone

from billing.services import reseller_open
from tests.keys.factories import WalletKeyFactory
from tests.proxy.conftest import ProxyServer, start_proxy_server
from usage.exports import EXPORT_PAGE_SIZE
from usage.models import Trace

__all__ = ["start_proxy_server"]  # the fixture, used here as in tests/proxy

ROWS = 2 * EXPORT_PAGE_SIZE + 500


@pytest.mark.django_db(transaction=True)
def test_a_request_export_streams_every_row_through_the_asgi_server(
    start_proxy_server: Callable[..., ProxyServer],
) -> None:
    tenant, token = reseller_open(email="export@example.com")
    key = WalletKeyFactory.create(tenant=tenant, label="=bulk")
    start = timezone.now() - timedelta(days=1)
    Trace.objects.bulk_create(
        Trace(
            request_id=f"req-{n:06d}",
            tenant=tenant,
            client_key=key,
            endpoint="chat.completions",
            model="mock-gpt",
            status=Trace.Status.OK,
            status_code=200,
            client_nanos=n,
            created_at=start + timedelta(seconds=n // 3),  # ties: pages cut through them
        )
        for n in range(ROWS)
    )
    server = start_proxy_server()
    headers = {"Authorization": f"Bearer {token.secret}", "Accept": "text/csv"}

    chunks = []
    with httpx.stream(
        "GET", f"{server.url}/api/v1/keys/{key.pk}/requests", headers=headers, timeout=60
    ) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"] == "text/csv; charset=utf-8"
        assert response.headers["transfer-encoding"] == "chunked"  # no length: streamed
        chunks = list(response.iter_raw())

    rows = list(csv.DictReader(io.StringIO(b"".join(chunks).decode(), newline="")))
    assert len(rows) == ROWS
    assert len({row["request_id"] for row in rows}) == ROWS
    assert rows[0]["request_id"] == f"req-{ROWS - 1:06d}"  # newest first
    assert {row["key_label"] for row in rows} == {"'=bulk"}
    assert len(chunks) > 1

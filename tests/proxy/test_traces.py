"""Trace rows: one request's strings can never cost other requests their traces.

The writer batches every tenant's rows into one write (COPY on PostgreSQL), which is all or
nothing. The strings a client controls are made storable where the row is built
(``trace_text``); a row the database still refuses is isolated by splitting the batch, then
repaired or dropped alone, and counted. Checked here on the writer itself, against the
configured database through both drivers, and end to end through the real server (two
workers, PostgreSQL) with bad requests interleaved with another tenant's good ones.
"""

from __future__ import annotations

import asyncio
import http.client
import logging
import unicodedata
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import orjson
import pytest
from asgiref.sync import sync_to_async
from django.db import connections
from django.db.models import Sum

from billing.models import Reservation
from billing.services import reseller_open, wallet_credit
from keys.models import TAG_MAX_LENGTH, ClientKey
from keys.services import key_create
from proxy.db import Database, DjangoDatabase, PostgresDatabase, RowsRefused, postgres_conninfo
from proxy.traces import COLUMNS, TraceRow, TraceWriter, trace_text
from tests.proxy.conftest import (
    USD,
    ProxyServer,
    World,
    assert_books_clean,
    key_row,
    traces_of,
    wait_for,
)
from usage.models import MODEL_MAX_LENGTH, Trace

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
FFFD = "\ufffd"


def is_storable(value: str) -> bool:
    """No control character, no surrogate: what every database can store as text."""
    return not any(unicodedata.category(ch) in ("Cc", "Cs") for ch in value)


# ---------------------------------------------------------------------------- trace_text


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("gpt-4o-mini", "gpt-4o-mini"),
        ("", ""),
        ("模型 ünï 😀", "模型 ünï 😀"),
        # Format characters and no-break spaces are storable: kept (only the slow path).
        ("👩\u200d💻\u00a0x", "👩\u200d💻\u00a0x"),
        ("x\x00", f"x{FFFD}"),
        ("a\tb\nc\rd\x1b[31m\x7f\x85\x9f", f"a{FFFD}b{FFFD}c{FFFD}d{FFFD}[31m{FFFD}{FFFD}{FFFD}"),
        ("\ud800", FFFD),
        ("a\udfffb\ud83d", f"a{FFFD}b{FFFD}"),
        ("m" * 250, "m" * 200),
        ("\x00" * 250, FFFD * 200),
    ],
    ids=repr,
)
def test_trace_text_makes_any_string_storable_and_leaves_clean_ones_alone(
    value: str, expected: str
) -> None:
    result = trace_text(value, 200)
    assert result == expected
    assert is_storable(result)
    result.encode()  # UTF-8 encodable
    if value == expected:
        assert result is value  # the fast path allocates nothing


# ---------------------------------------------------------------------------- the writer


def row(key: ClientKey, request_id: str, **changes: Any) -> TraceRow:
    values: dict[str, Any] = {
        "request_id": request_id,
        "tenant_id": key.tenant_id,
        "client_key_id": key.pk,
        "tag": "team",
        "endpoint": "chat.completions",
        "model": "mock-gpt",
        "upstream_id": None,
        "upstream_model": "",
        "price_id": None,
        "is_stream": False,
        "input_tokens": 10,
        "output_tokens": 5,
        "cached_input_tokens": 0,
        "cache_write_tokens": 0,
        "is_usage_estimated": False,
        "cost_nanos": 100,
        "client_nanos": 200,
        "status_code": 200,
        "status": "ok",
        "error_class": "",
        "latency_ms": 12,
        "ttft_ms": None,
        "is_over_hold": False,
        "overrun_cost_nanos": 0,
        "cache_savings_nanos": 0,
        "client_cache_savings_nanos": 0,
        "created_at": NOW,
    }
    assert set(values) == set(COLUMNS)
    return TraceRow(**{**values, **changes})


DRIVERS = [
    pytest.param("django", id="django"),
    pytest.param("psycopg", id="psycopg", marks=pytest.mark.postgres),
]


def database(driver: str) -> Database:
    if driver == "django":
        return DjangoDatabase()
    return PostgresDatabase(postgres_conninfo(), min_size=1, max_size=2)


def flushed(db: Database, rows: list[TraceRow]) -> TraceWriter:
    async def go() -> TraceWriter:
        writer = TraceWriter(db, flush_ms=50)
        writer.buffer.extend(rows)
        try:
            await writer.flush()
        finally:
            await db.close()
            # The Django driver's connection lives in asgiref's thread: close it there.
            await sync_to_async(connections.close_all)()
        return writer

    return asyncio.run(go())


@pytest.mark.parametrize("driver", DRIVERS)
@pytest.mark.django_db(transaction=True)
def test_a_batch_with_unwritable_rows_writes_all_the_others_and_counts_the_loss(
    driver: str, tenant: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Rows no database takes as they are, among good rows of another tenant: a lone
    surrogate (no UTF-8 for it), a token count beyond the column's range (an upstream may
    report anything) are repaired and written; a row whose key no longer exists cannot be,
    and only it is dropped, counted and logged."""
    other, _ = reseller_open(email="other@example.com")
    good_key = key_create(tenant=other, actor=None, label="good", funding="wallet").key
    bad_key = key_create(tenant=tenant, actor=None, label="bad", funding="wallet").key
    good = [row(good_key, f"good-{i}") for i in range(40)]
    surrogate = row(bad_key, "bad-surrogate", tag="x\ud800y", model="m\udc00")
    huge = row(bad_key, "bad-huge", output_tokens=2**64, input_tokens=2**40, ttft_ms=2**33)
    orphan = row(bad_key, "bad-orphan", client_key_id=bad_key.pk + 10_000)
    batch = [*good[:10], surrogate, *good[10:25], orphan, *good[25:], huge]

    with caplog.at_level(logging.WARNING, logger="proxy.traces"):
        writer = flushed(database(driver), batch)

    written = set(Trace.objects.values_list("request_id", flat=True))
    assert written == {r.request_id for r in good} | {"bad-surrogate", "bad-huge"}
    assert (writer.dropped_count, writer.repaired_count) == (1, 2)
    repaired = Trace.objects.get(request_id="bad-surrogate")
    assert (repaired.tag, repaired.model) == (f"x{FFFD}y", f"m{FFFD}")
    clamped = Trace.objects.get(request_id="bad-huge")
    assert (clamped.output_tokens, clamped.input_tokens, clamped.ttft_ms) == (2**31 - 1,) * 3
    dropped = [r for r in caplog.records if "bad-orphan dropped" in r.getMessage()]
    assert len(dropped) == 1
    assert "1 traces dropped by this worker" in dropped[0].getMessage()


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_strings_postgresql_refuses_are_repaired_not_lost(tenant: Any) -> None:
    """NUL, and strings longer than their column: PostgreSQL's own refusals (SQLite takes
    both), each alone in a batch of good rows."""
    key = key_create(tenant=tenant, actor=None, label="k", funding="wallet").key
    bad = [
        row(key, "nul-model", model="x\x00"),
        row(key, "long-tag", tag="t" * (TAG_MAX_LENGTH + 1)),
        row(key, "long-model", model="m" * 5_000, upstream_model="u" * 300),
        row(key, "long-error", error_class="e" * 65),
    ]
    good = [row(key, f"good-{i}") for i in range(20)]

    writer = flushed(database("psycopg"), [*good[:5], *bad, *good[5:]])

    assert Trace.objects.count() == len(good) + len(bad)
    assert (writer.dropped_count, writer.repaired_count) == (0, len(bad))
    assert Trace.objects.get(request_id="nul-model").model == f"x{FFFD}"
    assert Trace.objects.get(request_id="long-tag").tag == "t" * TAG_MAX_LENGTH
    assert Trace.objects.get(request_id="long-model").model == "m" * MODEL_MAX_LENGTH


class Unavailable:
    """A database that cannot be reached (outside our walls)."""

    def __init__(self) -> None:
        self.calls = 0

    async def insert_many(self, table: str, columns: Any, rows: Any) -> None:
        self.calls += 1
        raise ConnectionRefusedError("connection refused")

    async def close(self) -> None:
        return None


def test_a_database_that_is_down_is_not_asked_row_by_row() -> None:
    """Splitting is for a refused row; a database that is down gets one attempt per batch,
    and every trace of it is counted as dropped."""
    db = Unavailable()
    rows = [row(ClientKey(pk=1, tenant_id=1), f"r-{i}") for i in range(700)]

    writer = flushed(db, rows)  # type: ignore[arg-type]

    assert db.calls == 2  # batches of 500 and 200
    assert (writer.dropped_count, writer.repaired_count) == (700, 0)


def test_rows_refused_never_quotes_the_refused_value() -> None:
    """PostgreSQL's error context quotes the row; the log line keeps to the first line."""
    from proxy.db import _refusal

    error = _refusal(ValueError('value too long\nCONTEXT:  COPY proxy_trace, line 2: "secret"'))
    assert isinstance(error, RowsRefused)
    assert "secret" not in str(error)


# ---------------------------------------------------------------------------- the real server


@pytest.fixture(scope="module")
def proxy_server(start_proxy_server: Callable[..., ProxyServer]) -> Iterator[ProxyServer]:
    """Two workers, as in production: each buffers and batches its own traces."""
    server = start_proxy_server(workers=2)
    yield server
    server.stop()


UNLIMITED = {"rpm": 100_000, "max_concurrency": 1_000}
CHAT_PATH = "/v1/chat/completions"
GOOD_BODY = {"model": "gpt-fake", "messages": [{"role": "user", "content": "Hello there"}]}


def raw_post(
    url: str, path: str, body: bytes, secret: str, headers: tuple[tuple[str, bytes], ...] = ()
) -> tuple[int, str | None]:
    """POST exactly these bytes and header values (httpx refuses control characters in a
    header; a hostile client does not): (status, x-request-id)."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=20)
    try:
        conn.putrequest("POST", path, skip_accept_encoding=True)
        conn.putheader("content-type", "application/json")
        conn.putheader("content-length", str(len(body)))
        conn.putheader("authorization", f"Bearer {secret}")
        for name, value in headers:
            conn.putheader(name, value)
        conn.endheaders(body)
        response = conn.getresponse()
        response.read()
        return response.status, response.getheader("x-request-id")
    finally:
        conn.close()


def chat(model_json: bytes, **extra: Any) -> bytes:
    """A chat body whose model is given as raw JSON (escapes, invalid bytes and all)."""
    rest = orjson.dumps({"messages": GOOD_BODY["messages"], **extra})
    return b'{"model":' + model_json + b"," + rest[1:]


# (what it is, path, body, headers, statuses the server may answer)
BAD_CALLS: list[tuple[str, str, bytes, tuple[tuple[str, bytes], ...], set[int]]] = [
    ("NUL in the model", CHAT_PATH, chat(b'"x\\u0000"'), (), {404}),
    ("controls in the model", CHAT_PATH, chat(b'"x\\u0001\\u001b[0m\\u007f\\u0085"'), (), {404}),
    ("lone high surrogate", CHAT_PATH, chat(b'"gpt\\ud800"'), (), {400}),
    ("lone low surrogate", CHAT_PATH, chat(b'"\\udc00"'), (), {400}),
    ("surrogate as UTF-8 bytes", CHAT_PATH, chat(b'"\xed\xa0\x80"'), (), {400}),
    ("over-long model", CHAT_PATH, chat(orjson.dumps("m" * 5_000)), (), {404}),
    (
        "NUL in an Anthropic model",
        "/v1/messages",
        orjson.dumps({"model": "x\x00", "max_tokens": 5, "messages": GOOD_BODY["messages"]}),
        (),
        {404},
    ),
    # The server's HTTP parser passes a tab and every byte from 0x80 in a header (C1
    # controls once decoded as Latin-1; 0x9b is a terminal's escape); another ASGI server
    # may pass more.
    (
        "C1 controls and a tab in the tag",
        CHAT_PATH,
        orjson.dumps(GOOD_BODY),
        (("x-tollgate-tag", b"tag\t\x85\x9b31m\xff"),),
        {200},
    ),
    (
        "C1 controls in a streamed request's tag",
        CHAT_PATH,
        orjson.dumps({**GOOD_BODY, "stream": True}),
        (("x-tollgate-tag", b"\x9b31mred\x9b0m"),),
        {200},
    ),
    (
        "over-long tag",
        CHAT_PATH,
        orjson.dumps(GOOD_BODY),
        (("x-tollgate-tag", b"t" * 1_000),),
        {200},
    ),
    # These it refuses (400 before the proxy sees the request: no trace, no charge); another
    # server may not, and then they are traced like the ones above.
    (
        "C0 controls in the tag",
        CHAT_PATH,
        orjson.dumps(GOOD_BODY),
        (("x-tollgate-tag", b"a\x01\x1b\x7fb"),),
        {200, 400},
    ),
    (
        "NUL in the tag",
        CHAT_PATH,
        orjson.dumps(GOOD_BODY),
        (("x-tollgate-tag", b"a\x00b"),),
        {200, 400},
    ),
    (
        "bad model and bad tag",
        CHAT_PATH,
        chat(b'"\\u0000"'),
        (("x-tollgate-tag", b"\x9c" * 300),),
        {404},
    ),
]
GOOD_CALLS = 40


@pytest.mark.postgres
@pytest.mark.usefixtures("books_balance")
def test_bad_requests_never_cost_another_tenant_its_traces(world: World) -> None:
    """The failure this guards against: a NUL in one request's model made PostgreSQL refuse
    the batch COPY that carried it, and every other tenant's traces in that batch were lost
    (40 charged requests, 15 traces; usage reports undercounted). Here bad requests of one
    tenant run interleaved with another tenant's good ones on two workers: every good
    request has its trace, every request of either tenant that got a request id has one,
    each charged request's trace holds its charge, and nothing is dropped."""
    good_key = world.key(**UNLIMITED)
    hostile, _ = reseller_open(email="hostile@example.com")
    wallet_credit(tenant=hostile, amount_nanos=100 * USD, reason="test funds")
    bad_key = world.key(tenant=hostile, **UNLIMITED)
    # A key's own default tag is the request's string too, when no header is sent.
    tagged_key = world.key(tenant=hostile, default_tag="team\x01\x1b[0m", **UNLIMITED)

    calls: list[tuple[str, str, str, bytes, tuple[tuple[str, bytes], ...], set[int]]] = []
    bad = iter(BAD_CALLS * 3)
    for index in range(GOOD_CALLS):
        calls.append(("good", good_key.secret, CHAT_PATH, orjson.dumps(GOOD_BODY), (), {200}))
        if index % 3 == 0:
            calls.append(
                ("default tag", tagged_key.secret, CHAT_PATH, orjson.dumps(GOOD_BODY), (), {200})
            )
        what, path, body, headers, statuses = next(bad, BAD_CALLS[index % len(BAD_CALLS)])
        calls.append((what, bad_key.secret, path, body, headers, statuses))

    def send(
        call: tuple[str, str, str, bytes, tuple[tuple[str, bytes], ...], set[int]],
    ) -> tuple[str, int, str | None]:
        what, secret, path, body, headers, _ = call
        status, request_id = raw_post(world.url, path, body, secret, headers)
        return what, status, request_id

    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(send, calls))

    for call, (what, status, _) in zip(calls, answers, strict=True):
        assert status in call[5], (what, status)
    good_ids = {rid for what, _, rid in answers if what == "good"}
    assert len(good_ids) == GOOD_CALLS
    traced_good = traces_of(key_row(good_key), GOOD_CALLS, timeout=10)
    assert {t.request_id for t in traced_good} == good_ids

    # Every request that got an id (every one the proxy answered itself) has its trace.
    answered = {rid for _, _, rid in answers if rid is not None}
    wait_for(
        lambda: (
            set(Trace.objects.filter(request_id__in=answered).values_list("request_id", flat=True))
            == answered
        ),
        timeout=10,
    )
    # Every charged request has its trace, holding its charge: usage reports read traces.
    settled = Reservation.objects.filter(status=Reservation.Status.SETTLED)
    assert set(settled.values_list("request_id", flat=True)) <= answered
    for issued in (good_key, bad_key, tagged_key):
        key = key_row(issued)
        traced = Trace.objects.filter(client_key=key).aggregate(
            cost=Sum("cost_nanos"), client=Sum("client_nanos")
        )
        assert (traced["cost"] or 0, traced["client"] or 0) == (
            key.cost_spent_nanos,
            key.client_spent_nanos,
        )
    assert key_row(good_key).client_spent_nanos > 0

    for trace in Trace.objects.all():
        for value, limit in ((trace.model, MODEL_MAX_LENGTH), (trace.tag, TAG_MAX_LENGTH)):
            assert is_storable(value) and len(value) <= limit, (trace.request_id, value)
    tags = set(Trace.objects.filter(client_key=key_row(bad_key)).values_list("tag", flat=True))
    assert f"tag{FFFD}{FFFD}{FFFD}31mÿ" in tags
    assert f"{FFFD}31mred{FFFD}0m" in tags
    assert FFFD * TAG_MAX_LENGTH in tags
    assert "t" * TAG_MAX_LENGTH in tags
    tagged = Trace.objects.filter(client_key=key_row(tagged_key)).values_list("tag", flat=True)
    assert set(tagged) == {f"team{FFFD}{FFFD}[0m"}
    models = set(Trace.objects.filter(client_key=key_row(bad_key)).values_list("model", flat=True))
    assert {f"x{FFFD}", f"x{FFFD}{FFFD}[0m{FFFD}{FFFD}", "m" * MODEL_MAX_LENGTH} <= models

    log = world.server.log()
    assert "could not write" not in log
    assert "dropped" not in log
    assert_books_clean()


# ---------------------------------------------------------------------------- other reads


@pytest.mark.parametrize("driver", DRIVERS)
@pytest.mark.django_db(transaction=True)
def test_a_secret_with_a_control_character_is_an_unknown_key_not_a_failed_query(
    driver: str,
) -> None:
    """The secret's prefix is the one request string the proxy sends to the database as a
    parameter. This server's HTTP parser refuses a NUL in a header, another may not; then
    PostgreSQL would refuse the query, and the client would get 503 instead of 401."""
    from proxy.admission import Catalog

    db = database(driver)

    async def look_up() -> list[object]:
        catalog = Catalog(db)
        try:
            return [await catalog.key_for_secret(s) for s in ("tg-\x00abcdefgh", "tg-ab\x01cd")]
        finally:
            await db.close()
            await sync_to_async(connections.close_all)()

    assert asyncio.run(look_up()) == [None, None]

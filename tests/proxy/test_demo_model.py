"""The built-in demo model through the real server, as a newcomer meets it after
``make run``: ``seed_demo``, then the official SDKs (and the curl line it prints) with the
demo client key, no provider's API key anywhere.

Each call is answered, charged at the demo model's posted price exactly (independent
arithmetic: ``tests.proxy.conftest.expected_charge``), traced and reported like any other
request, and the books balance; turned off in the admin, or never seeded, the model is
refused in each wire format's own shape.
"""

from __future__ import annotations

import io
import json
import shlex
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import anthropic
import openai
import pytest
from django.core.management import call_command
from rest_framework.test import APIClient

from billing.models import DEMO_BASE_URL, Reservation, Upstream
from billing.services import reseller_open, upstream_save, wallet_credit
from keys.models import ClientKey
from keys.services import IssuedKey, key_create
from tests.proxy.conftest import (
    RATIO,
    TRACE_FLUSH_SECONDS,
    USD,
    Price,
    ProxyServer,
    assert_books_clean,
    assert_charged,
    assert_nothing_charged,
    expected_charge,
    key_row,
    trace_for,
    traces_of,
    usd,
    wait_for,
)
from usage.models import Trace

# What seed_demo posts for tollgate-demo ($2.50 in, $10.00 out per 1M tokens); its key is
# a $10 client budget bought for $6 (RATIO).
DEMO_PRICE = Price(input=2_500_000_000, output=10_000_000_000)
MODEL = "tollgate-demo"
HELLO = "Hello! What can you do?"


@dataclass
class Demo:
    url: str
    seed: dict[str, Any]
    issued: IssuedKey

    @property
    def secret(self) -> str:
        return self.issued.secret

    def openai(self) -> openai.OpenAI:
        return openai.OpenAI(
            base_url=f"{self.url}/v1", api_key=self.secret, max_retries=0, timeout=20
        )

    def anthropic(self) -> anthropic.Anthropic:
        return anthropic.Anthropic(
            base_url=self.url, api_key=self.secret, max_retries=0, timeout=20
        )


def seed(url: str) -> dict[str, Any]:
    out = io.StringIO()
    call_command("seed_demo", "--json", "--url", url, stdout=out)
    return dict(json.loads(out.getvalue()))


@pytest.fixture
def demo_var(settings: Any, tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    settings.VAR_DIR = tmp_path
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    monkeypatch.delenv("DEMO_ADMIN_PASSWORD", raising=False)
    monkeypatch.delenv("DEMO_PASSWORD", raising=False)


@pytest.fixture
def demo(transactional_db: None, demo_var: None, proxy_server: ProxyServer) -> Iterator[Demo]:
    seeded = seed(proxy_server.url)
    key = ClientKey.objects.get(label="Demo key")
    yield Demo(
        url=proxy_server.url, seed=seeded, issued=IssuedKey(key=key, secret=seeded["client_key"])
    )
    # Nothing in flight when the tables are emptied, and the last traces written.
    wait_for(
        lambda: not Reservation.objects.filter(status=Reservation.Status.HELD).exists(), timeout=10
    )
    time.sleep(TRACE_FLUSH_SECONDS)


def demo_charge(input_tokens: int, output_tokens: int) -> Any:
    return expected_charge(
        DEMO_PRICE, input_tokens=input_tokens, output_tokens=output_tokens, ratio=RATIO
    )


def spent(issued: IssuedKey) -> tuple[int, int]:
    key = key_row(issued)
    return key.cost_spent_nanos, key.client_spent_nanos


def test_openai_sdk_chat_is_answered_charged_traced_and_reported(demo: Demo) -> None:
    raw = demo.openai().chat.completions.with_raw_response.create(
        model=MODEL, messages=[{"role": "user", "content": HELLO}]
    )
    completion = raw.parse()

    text = completion.choices[0].message.content or ""
    assert "Tollgate's built-in demo model" in text and "no AI provider was called" in text
    assert f'You said: "{HELLO}"' in text
    assert completion.model == MODEL and completion.choices[0].finish_reason == "stop"
    usage = completion.usage
    assert usage is not None and usage.prompt_tokens > 0 and usage.completion_tokens > 20
    expected = demo_charge(usage.prompt_tokens, usage.completion_tokens)
    assert expected.cost_nanos > 0
    request_id = raw.headers["x-request-id"]
    trace = assert_charged(
        demo.issued, request_id, expected, endpoint="chat.completions", is_stream=False
    )
    assert (trace.model, trace.upstream_model) == (MODEL, MODEL)
    assert trace.upstream_id == Upstream.objects.get(name="tollgate-demo").pk
    assert (trace.input_tokens, trace.output_tokens) == (
        usage.prompt_tokens,
        usage.completion_tokens,
    )

    # The reseller's reports show it as any model's traffic (before and after the rollup).
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {demo.seed['api_token']}")
    for rolled in (False, True):
        if rolled:
            call_command("rollup_usage", stdout=io.StringIO())
        report = api.get(f"/api/v1/keys/{demo.issued.key.pk}/usage", {"window": "30d"}).json()
        (model,) = report["by_model"]
        assert (model["model"], model["requests"]) == (MODEL, 1)
        assert report["summary"]["requests"] == 1
        assert (report["summary"]["cost"], report["summary"]["client_price"]) == (
            usd(expected.cost_nanos),
            usd(expected.client_nanos),
        )
        (day,) = report["by_day"]
        assert day["requests"] == 1


@pytest.mark.parametrize("asks_for_usage", [False, True], ids=["usage-hidden", "usage-asked"])
def test_openai_sdk_stream_is_charged_like_the_same_request_unstreamed(
    demo: Demo, asks_for_usage: bool
) -> None:
    client = demo.openai()
    messages: Any = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": HELLO}]
    whole = client.chat.completions.create(model=MODEL, messages=messages)
    assert whole.usage is not None
    before = spent(demo.issued)

    options: Any = {"include_usage": True} if asks_for_usage else openai.omit
    with client.chat.completions.with_streaming_response.create(
        model=MODEL, messages=messages, stream=True, stream_options=options
    ) as response:
        request_id = response.headers["x-request-id"]
        chunks = list(response.parse())

    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    content_chunks = [c for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(content_chunks) == whole.usage.completion_tokens  # a token an event
    usage_chunks = [c for c in chunks if c.usage is not None]
    assert len(usage_chunks) == (1 if asks_for_usage else 0)
    expected = demo_charge(whole.usage.prompt_tokens, whole.usage.completion_tokens)
    trace = trace_for(request_id)
    assert (trace.endpoint, trace.is_stream, trace.status) == ("chat.completions", True, "ok")
    assert not trace.is_usage_estimated and trace.ttft_ms is not None
    assert (trace.cost_nanos, trace.client_nanos) == (expected.cost_nanos, expected.client_nanos)
    after = spent(demo.issued)
    assert (after[0] - before[0], after[1] - before[1]) == (
        expected.cost_nanos,
        expected.client_nanos,
    )
    assert_books_clean()


def test_anthropic_sdk_message_and_stream_are_answered_and_charged(demo: Demo) -> None:
    client = demo.anthropic()
    raw = client.messages.with_raw_response.create(
        model=MODEL,
        max_tokens=200,
        system="Be brief.",
        messages=[{"role": "user", "content": HELLO}],
    )
    message = raw.parse()
    block = message.content[0]
    assert isinstance(block, anthropic.types.TextBlock)
    assert "Tollgate's built-in demo model" in block.text and HELLO in block.text
    assert message.stop_reason == "end_turn"
    expected = demo_charge(message.usage.input_tokens, message.usage.output_tokens)
    assert_charged(
        demo.issued, raw.headers["x-request-id"], expected, endpoint="messages", is_stream=False
    )

    with client.messages.stream(
        model=MODEL,
        max_tokens=200,
        system="Be brief.",
        messages=[{"role": "user", "content": HELLO}],
    ) as stream:
        streamed_text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert streamed_text == block.text
    assert (final.usage.input_tokens, final.usage.output_tokens) == (
        message.usage.input_tokens,
        message.usage.output_tokens,
    )
    stream_trace = traces_of(demo.issued.key, 2)[1]
    assert (stream_trace.endpoint, stream_trace.is_stream, stream_trace.status) == (
        "messages",
        True,
        "ok",
    )
    assert (stream_trace.cost_nanos, stream_trace.client_nanos) == (
        expected.cost_nanos,
        expected.client_nanos,
    )
    assert spent(demo.issued) == (2 * expected.cost_nanos, 2 * expected.client_nanos)

    # Token counting is answered too, free, and agrees with what a message is charged for.
    counted = client.messages.count_tokens(
        model=MODEL, system="Be brief.", messages=[{"role": "user", "content": HELLO}]
    )
    assert counted.input_tokens == message.usage.input_tokens
    assert_books_clean()


def test_the_reply_never_outgrows_the_limit_the_client_set(demo: Demo) -> None:
    completion = demo.openai().chat.completions.create(
        model=MODEL, max_tokens=4, messages=[{"role": "user", "content": HELLO}]
    )
    assert completion.choices[0].finish_reason == "length"
    assert completion.usage is not None and completion.usage.completion_tokens == 4
    message = demo.anthropic().messages.create(
        model=MODEL, max_tokens=3, messages=[{"role": "user", "content": HELLO}]
    )
    assert message.stop_reason == "max_tokens" and message.usage.output_tokens == 3
    assert_books_clean()


def test_models_list_offers_the_demo_model_to_both_sdks(demo: Demo) -> None:
    assert MODEL in {m.id for m in demo.openai().models.list()}
    assert MODEL in {m.id for m in demo.anthropic().models.list()}


def test_other_endpoints_are_refused_clearly_and_charge_nothing(demo: Demo) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        demo.openai().embeddings.create(model=MODEL, input="hello")
    assert refused.value.code == "demo_endpoint_unsupported"
    assert "/v1/chat/completions" in refused.value.message
    assert_books_clean()  # the hold is handed back once the answer is out
    assert_nothing_charged(demo.issued)
    (trace,) = traces_of(demo.issued.key, 1)
    assert (trace.status, trace.status_code) == ("upstream_error", 400)


def test_the_printed_curl_line_is_answered(demo: Demo) -> None:
    line = demo.seed["demo_curl"]
    assert line.startswith(f"curl {demo.url}/v1/chat/completions ")
    assert f"Bearer {demo.secret}" in line and f'"model": "{MODEL}"' in line
    if shutil.which("curl") is None:
        pytest.skip("needs curl")
    done = subprocess.run(  # noqa: S603 - the line seed_demo printed, against our server
        [*shlex.split(line), "-sS"], capture_output=True, timeout=20, check=True
    )
    body = json.loads(done.stdout)
    assert "Tollgate's built-in demo model" in body["choices"][0]["message"]["content"]
    (trace,) = traces_of(demo.issued.key, 1)
    assert trace.status == "ok" and trace.cost_nanos > 0
    assert_books_clean()


def test_turned_off_in_the_admin_the_demo_model_is_refused_in_each_shape(demo: Demo) -> None:
    # What the admin's "Active" box does (billing.admin.UpstreamAdmin.save_model).
    upstream_save(name="tollgate-demo", kind="demo", base_url=DEMO_BASE_URL, is_active=False)

    with pytest.raises(openai.NotFoundError) as refused:
        demo.openai().chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": HELLO}]
        )
    assert refused.value.code == "model_not_found"
    assert MODEL in refused.value.message
    with pytest.raises(anthropic.NotFoundError) as anthropic_refused:
        demo.anthropic().messages.create(
            model=MODEL, max_tokens=50, messages=[{"role": "user", "content": HELLO}]
        )
    body = anthropic_refused.value.body
    assert isinstance(body, dict) and body["error"]["type"] == "not_found_error"
    assert MODEL not in {m.id for m in demo.openai().models.list()}
    assert_nothing_charged(demo.issued)
    assert [t.status for t in traces_of(demo.issued.key, 2)] == ["refused", "refused"]

    # seed_demo again (the next `make run`) leaves the operator's choice alone.
    again = seed(demo.url)
    assert again["demo_model_on"] is False and again["client_key"] == demo.secret
    with pytest.raises(openai.NotFoundError):
        demo.openai().chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": HELLO}]
        )
    assert_books_clean()


def test_without_the_demo_seeding_there_is_no_demo_model(
    transactional_db: None, proxy_server: ProxyServer
) -> None:
    tenant, _ = reseller_open(email="fresh@example.com")
    wallet_credit(tenant=tenant, amount_nanos=20 * USD, reason="test funds")
    issued = key_create(
        tenant=tenant,
        actor=None,
        label="fresh",
        client_budget_nanos=10 * USD,
        your_cost_nanos=6 * USD,
    )
    assert not Upstream.objects.filter(kind=Upstream.Kind.DEMO).exists()

    with pytest.raises(openai.NotFoundError) as refused:
        openai.OpenAI(
            base_url=f"{proxy_server.url}/v1", api_key=issued.secret, max_retries=0
        ).chat.completions.create(model=MODEL, messages=[{"role": "user", "content": HELLO}])
    assert refused.value.code == "model_not_found"
    with pytest.raises(anthropic.NotFoundError):
        anthropic.Anthropic(
            base_url=proxy_server.url, api_key=issued.secret, max_retries=0
        ).messages.create(model=MODEL, max_tokens=50, messages=[{"role": "user", "content": HELLO}])
    assert_nothing_charged(issued)
    wait_for(lambda: Trace.objects.filter(client_key=issued.key).count() == 2)
    time.sleep(TRACE_FLUSH_SECONDS)
    assert_books_clean()

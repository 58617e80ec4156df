"""The built-in demo upstream's answers, as forwarding reads them: the wire formats, the
usage they report (read back by the proxy's own stream scanners), the output limit.

The whole path through a real server (admission, settlement, trace) is in
``test_demo_model.py``."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest

from billing.money import Usage
from proxy.endpoints import CHAT, MESSAGES, parse_chat, parse_messages, prepare_chat
from proxy.upstreams.base import DEMO_KIND, UpstreamTarget, speaks
from proxy.upstreams.demo import DemoAdapter, DemoResponse, demo_tokens, prompt_tokens
from proxy.wire.anthropic import MessagesStreamScanner
from proxy.wire.openai import ChatStreamScanner

TARGET = UpstreamTarget(
    upstream_id=1,
    name="tollgate-demo",
    kind=DEMO_KIND,
    base_url="http://tollgate-demo.invalid",
    timeout_seconds=600,
)
USER = "Tell me, please: what is a tollgate?"


def answer(path: str, payload: dict[str, Any]) -> DemoResponse:
    async def go() -> DemoResponse:
        return await DemoAdapter().open(
            None,  # type: ignore[arg-type]  # no session: nothing is sent anywhere
            TARGET,
            path=path,
            body=orjson.dumps(payload),
            client_headers={},
        )

    return asyncio.run(go())


def events(response: DemoResponse) -> list[bytes]:
    async def go() -> list[bytes]:
        return [event async for event in response.content.iter_any()]

    return asyncio.run(go())


def chat(**fields: Any) -> dict[str, Any]:
    return {
        "model": "tollgate-demo",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": USER},
        ],
        **fields,
    }


def test_tokens_rebuild_the_text_and_count_words_and_marks() -> None:
    text = "Hello, world! It's 42 degrees."
    tokens = demo_tokens(text)
    assert "".join(tokens) == text
    assert tokens == ["Hello", ",", " world", "!", " It", "'", "s", " 42", " degrees", "."]
    # Each message's text, its wrapping (3) and the reply's priming (3).
    assert prompt_tokens(chat()) == 3 + (3 + 3) + (3 + len(demo_tokens(USER)))


def test_chat_completion_says_it_is_a_demo_and_reports_its_usage() -> None:
    response = answer("/chat/completions", chat(max_tokens=500))
    assert response.status == 200
    body = orjson.loads(asyncio.run(response.read()))
    assert body["object"] == "chat.completion" and body["model"] == "tollgate-demo"
    text = body["choices"][0]["message"]["content"]
    assert "demo model" in text and "no AI provider was called" in text
    assert f'You said: "{USER}"' in text
    assert body["choices"][0]["finish_reason"] == "stop"
    usage = body["usage"]
    assert usage["completion_tokens"] == len(demo_tokens(text))
    assert usage["prompt_tokens"] == prompt_tokens(chat())
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    # What the proxy settles on.
    assert CHAT.usage_from_body(body) == Usage(
        input_tokens=usage["prompt_tokens"], output_tokens=usage["completion_tokens"]
    )


def test_the_reply_stops_at_the_output_limit_the_proxy_set() -> None:
    # The proxy always bounds the output (here by the route's limit, 1,024, and the
    # client's 5) in the field this upstream takes.
    parsed = parse_chat(chat(max_completion_tokens=5))
    body = prepare_chat(parsed, orjson.dumps(chat()), TARGET, "tollgate-demo", 1_024)
    response = answer("/chat/completions", orjson.loads(body))
    completion = orjson.loads(asyncio.run(response.read()))
    assert completion["choices"][0]["finish_reason"] == "length"
    assert completion["usage"]["completion_tokens"] == 5
    assert completion["choices"][0]["message"]["content"] == "Hello from tollgate-demo"


def test_each_of_n_choices_is_answered_and_counted() -> None:
    completion = orjson.loads(asyncio.run(answer("/chat/completions", chat(n=3)).read()))
    texts = [choice["message"]["content"] for choice in completion["choices"]]
    assert len(texts) == 3 and len(set(texts)) == 1
    assert completion["usage"]["completion_tokens"] == 3 * len(demo_tokens(texts[0]))


def test_chat_stream_comes_a_token_an_event_and_the_scanner_reads_its_usage() -> None:
    payload = chat(stream=True, stream_options={"include_usage": True})
    response = answer("/chat/completions", payload)
    assert response.headers["content-type"].startswith("text/event-stream")
    stream = events(response)
    assert stream[-1] == b"data: [DONE]\n\n"
    chunks = [orjson.loads(event[6:]) for event in stream[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert "demo model" in text
    usage_chunk = chunks[-1]
    assert usage_chunk["choices"] == []
    assert usage_chunk["usage"]["completion_tokens"] == len(demo_tokens(text))

    # The proxy hides the usage chunk from a client that did not ask for it.
    scanner = ChatStreamScanner(hide_usage_chunk=True)
    forwarded = b"".join(scanner.feed(event) for event in stream) + scanner.finish()
    assert scanner.state.usage == Usage(
        input_tokens=prompt_tokens(payload), output_tokens=len(demo_tokens(text))
    )
    assert b'"usage"' not in forwarded and forwarded.endswith(b"data: [DONE]\n\n")
    # About one output token per content event, were the stream cut short.
    assert scanner.state.events == len(demo_tokens(text))


def test_message_and_its_stream_report_the_same_usage() -> None:
    payload = {
        "model": "tollgate-demo",
        "max_tokens": 100,
        "system": "Be brief.",
        "messages": [{"role": "user", "content": [{"type": "text", "text": USER}]}],
    }
    parsed = parse_messages(payload)
    assert parsed.max_output_tokens == 100
    message = orjson.loads(asyncio.run(answer("/v1/messages", payload).read()))
    assert message["type"] == "message" and message["stop_reason"] == "end_turn"
    text = message["content"][0]["text"]
    assert "demo model" in text and USER in text
    whole = MESSAGES.usage_from_body(message)
    assert whole == Usage(input_tokens=prompt_tokens(payload), output_tokens=len(demo_tokens(text)))

    stream = events(answer("/v1/messages", {**payload, "stream": True}))
    names = [event.split(b"\n", 1)[0] for event in stream]
    assert names[:3] == [b"event: message_start", b"event: content_block_start", b"event: ping"]
    assert names[-3:] == [
        b"event: content_block_stop",
        b"event: message_delta",
        b"event: message_stop",
    ]
    scanner = MessagesStreamScanner()
    for event in stream:
        scanner.feed(event)
    assert scanner.state.usage == whole


def test_count_tokens_counts_the_prompt_as_a_message_does() -> None:
    payload = {"model": "tollgate-demo", "messages": [{"role": "user", "content": USER}]}
    counted = orjson.loads(asyncio.run(answer("/v1/messages/count_tokens", payload).read()))
    assert counted == {"input_tokens": prompt_tokens(payload)}


@pytest.mark.parametrize("path", ["/responses", "/embeddings"])
def test_other_endpoints_are_refused_in_openais_shape(path: str) -> None:
    response = answer(path, {"model": "tollgate-demo", "input": "hi"})
    assert response.status == 400
    error = orjson.loads(asyncio.run(response.read()))["error"]
    assert error["code"] == "demo_endpoint_unsupported"
    assert "/v1/chat/completions" in error["message"] and "/v1/messages" in error["message"]


def test_closing_the_response_ends_its_stream() -> None:
    response = answer("/chat/completions", chat(stream=True))

    async def first_then_close() -> list[bytes]:
        seen = []
        async for event in response.content.iter_any():
            seen.append(event)
            response.close()  # the client went away (forwarding's disconnect watcher)
        return seen

    assert len(asyncio.run(first_then_close())) == 1


def test_a_demo_route_speaks_both_wire_formats_and_a_providers_only_its_own() -> None:
    assert speaks(TARGET, "openai") and speaks(TARGET, "anthropic")
    openai_target = UpstreamTarget(1, "openai", "openai", "https://api.openai.com/v1", 600)
    assert speaks(openai_target, "openai") and not speaks(openai_target, "anthropic")

"""A local fake LLM provider for the proxy tests: OpenAI and Anthropic wire formats.

It stands in for what is outside our walls (OpenAI, Anthropic, any compatible server), so
the real proxy can be exercised end to end. It listens on 127.0.0.1 only, in a thread that
runs its own asyncio loop (aiohttp.web), and records what each request looked like and how
it ended, for the tests to read.

Usage is deterministic, and every figure the fake reported is kept on its record:

* prompt tokens = max(1, characters of text in the request // 4) (messages, system, input);
  of those, ``prompt // 3`` are reported as cached reads;
* output tokens = content chunks sent = min(``DEFAULT_CHUNKS``, the request's max tokens,
  in whichever limit field the fake honours: every one, unless the model says otherwise);
* embeddings: prompt tokens only.

The proxy does not forward client headers, so behaviour is chosen by the model name it
forwards (``FAULT_*`` and ``SLOW_STREAM`` below); any other model answers normally.
"""

from __future__ import annotations

import asyncio
import base64
import json
import struct
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

DEFAULT_CHUNKS = 5
# A fixed prefix of the content chunks, so tests can check what came through.
WORDS = ("Hello", " from", " the", " fake", " upstream", " again", " and", " again")

FAULT_500 = "fault-500"  # an HTTP 500 before any output
FAULT_400 = "fault-400"  # an HTTP 400 in the wire format's own error shape
FAULT_401 = "fault-401"  # refuses the gateway's key, quoting part of it as OpenAI does
LEAKED_KEY_FRAGMENT = "sk-upst****cret"
FAULT_TIMEOUT = "fault-timeout"  # answers only after TIMEOUT_SLEEP_SECONDS
FAULT_BADJSON = "fault-badjson"  # a 200 whose body is not JSON
FAULT_MIDSTREAM = "fault-midstream"  # drops the connection after MIDSTREAM_CHUNKS chunks
SLOW_STREAM = "slow-stream"  # SLOW_CHUNKS chunks SLOW_GAP_SECONDS apart, or a late answer
NO_USAGE = "no-usage"  # never reports usage
SPACED_JSON = "spaced-json"  # streams chat chunks as Python's json.dumps writes them
# Honours only ``max_tokens``, as older vLLM, llama.cpp and many OpenAI-compatible servers
# do: any other limit field is ignored, and the answer runs to its own default length.
MAX_TOKENS_ONLY = "max-tokens-only"
IGNORES_LIMITS = "ignores-limits"  # honours no limit at all: always DEFAULT_CHUNKS of output

TIMEOUT_SLEEP_SECONDS = 3.0  # longer than the 1 s timeout the tests give such upstreams
MIDSTREAM_CHUNKS = 3
SLOW_CHUNKS = 40
SLOW_GAP_SECONDS = 0.1
SLOW_ANSWER_SECONDS = 1.0  # how long a slow model thinks before a non-streamed answer
EMBEDDING_DIM = 8


@dataclass
class Reported:
    """The usage the fake reported (OpenAI's prompt tokens include the cached ones)."""

    prompt_tokens: int = 0
    cached_tokens: int = 0
    output_tokens: int = 0

    @property
    def uncached_tokens(self) -> int:
        return self.prompt_tokens - self.cached_tokens


@dataclass
class Record:
    """What one request to the fake looked like and how it ended."""

    method: str
    path: str
    headers: dict[str, str]
    raw_body: bytes
    body: Any = None
    model: str = ""
    is_stream: bool = False
    status: int = 0
    chunks_sent: int = 0
    usage: Reported | None = None
    # The caller went away (or cancelled) before the fake finished its answer.
    is_cancelled: bool = False
    is_finished: bool = False
    started_at: float = field(default_factory=time.monotonic)

    @property
    def reported(self) -> Reported:
        """The usage the fake reported (it must have reported some)."""
        assert self.usage is not None, f"the fake reported no usage for {self.model!r}"
        return self.usage


def _text_chars(value: Any) -> int:
    """Characters of text in messages / system / input (strings or content parts)."""
    if isinstance(value, str):
        return len(value)
    if isinstance(value, list):
        return sum(_text_chars(item) for item in value)
    if isinstance(value, dict):
        return sum(_text_chars(value[k]) for k in ("content", "text", "system") if k in value)
    return 0


def prompt_usage(body: dict[str, Any]) -> tuple[int, int]:
    """(prompt tokens including cached, cached tokens) the fake reports for ``body``."""
    chars = (
        _text_chars(body.get("messages", []))
        + _text_chars(body.get("system", ""))
        + _text_chars(body.get("input", ""))
    )
    prompt = max(1, chars // 4)
    return prompt, prompt // 3


LIMIT_FIELDS = ("max_completion_tokens", "max_tokens", "max_output_tokens")


def honoured_limits(model: str) -> tuple[str, ...]:
    """The output limit fields the fake obeys when it serves ``model``."""
    if model.startswith(MAX_TOKENS_ONLY):
        return ("max_tokens",)
    if model.startswith(IGNORES_LIMITS):
        return ()
    return LIMIT_FIELDS


def output_chunks(body: dict[str, Any], default: int = DEFAULT_CHUNKS) -> int:
    model = body.get("model")
    for name in honoured_limits(model if isinstance(model, str) else ""):
        value = body.get(name)
        if isinstance(value, int) and value > 0:
            return min(default, value)
    return default


def _sse(data: Any, event: str | None = None) -> bytes:
    head = b"event: " + event.encode() + b"\n" if event else b""
    return head + b"data: " + orjson.dumps(data) + b"\n\n"


def _sse_spaced(data: Any, event: str | None = None) -> bytes:
    """What many Python OpenAI-compatible servers send: ``{"usage": {...}}``, with spaces."""
    head = b"event: " + event.encode() + b"\n" if event else b""
    return head + b"data: " + json.dumps(data).encode() + b"\n\n"


class FakeUpstream:
    """The fake provider; ``start()`` it once, point upstreams at ``openai_base_url`` /
    ``anthropic_base_url``, and read ``records``."""

    def __init__(self) -> None:
        self.records: list[Record] = []
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None

    # ------------------------------------------------------------------ lifecycle

    @property
    def openai_base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def anthropic_base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self._thread = threading.Thread(target=self._serve, name="fake-upstream", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the fake upstream did not start")
        if self._error is not None:
            raise RuntimeError("the fake upstream failed to start") from self._error

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(10)

    def _serve(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # surfaced by start()
            self._error = exc
            self._ready.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self.chat_completions)
        app.router.add_post("/v1/responses", self.responses)
        app.router.add_post("/v1/embeddings", self.embeddings)
        app.router.add_get("/v1/models", self.models)
        app.router.add_post("/v1/messages", self.messages)
        app.router.add_post("/v1/messages/count_tokens", self.count_tokens)
        # Cancel a handler when its caller hangs up, as a real provider stops generating.
        self._runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert isinstance(server, asyncio.Server)
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        await self._stop.wait()
        await self._runner.cleanup()

    # ------------------------------------------------------------------ reading records

    def clear(self) -> None:
        self.records.clear()

    def for_model(self, model: str) -> list[Record]:
        return [r for r in list(self.records) if r.model == model]

    def last(self, model: str | None = None) -> Record:
        records = self.for_model(model) if model is not None else list(self.records)
        assert records, f"the fake upstream saw no request for {model!r}"
        return records[-1]

    def wait_until(self, predicate: Any, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError("the fake upstream never reached the expected state")
            time.sleep(0.02)

    # ------------------------------------------------------------------ plumbing

    async def _record(self, request: web.Request) -> Record:
        raw = await request.read()
        record = Record(
            method=request.method,
            path=request.path,
            headers={k.lower(): v for k, v in request.headers.items()},
            raw_body=raw,
        )
        self.records.append(record)
        if raw:
            try:
                record.body = orjson.loads(raw)
            except orjson.JSONDecodeError:
                record.body = None
        if isinstance(record.body, dict):
            model = record.body.get("model")
            record.model = model if isinstance(model, str) else ""
            record.is_stream = record.body.get("stream") is True
        return record

    def _done(self, record: Record, response: web.StreamResponse) -> web.StreamResponse:
        record.status = response.status
        record.is_finished = True
        return response

    async def _think(self, record: Record, seconds: float) -> None:
        try:
            await asyncio.sleep(seconds)
        except asyncio.CancelledError:
            record.is_cancelled = True
            raise

    async def _fault(self, record: Record, *, anthropic: bool) -> web.StreamResponse | None:
        """The answer of a fault model, or None to answer normally (after any delay)."""
        model = record.model
        if model.startswith(FAULT_TIMEOUT):
            await self._think(record, TIMEOUT_SLEEP_SECONDS)
            return None
        if model.startswith(FAULT_500):
            body = _error_body(anthropic, "api_error", "The fake upstream broke (500).")
            return self._done(
                record, web.Response(status=500, body=body, content_type="application/json")
            )
        if model.startswith(FAULT_400):
            body = _error_body(anthropic, "invalid_request_error", "Unsupported parameter: 'fake'.")
            return self._done(
                record, web.Response(status=400, body=body, content_type="application/json")
            )
        if model.startswith(FAULT_401):
            body = _error_body(
                anthropic,
                "authentication_error",
                f"Incorrect API key provided: {LEAKED_KEY_FRAGMENT}.",
            )
            return self._done(
                record, web.Response(status=401, body=body, content_type="application/json")
            )
        if model.startswith(FAULT_BADJSON):
            body = b'{"id": "chatcmpl-broken", "choices": [ this is not json'
            return self._done(
                record, web.Response(status=200, body=body, content_type="application/json")
            )
        return None

    async def _stream(
        self,
        request: web.Request,
        record: Record,
        head: list[bytes],
        chunks: list[bytes],
        tail: list[bytes],
    ) -> web.StreamResponse:
        """Send an SSE answer: ``head``, then the content ``chunks`` (paced or cut off as
        the model asks), then ``tail``."""
        response = web.StreamResponse(
            status=200, headers={"content-type": "text/event-stream", "cache-control": "no-cache"}
        )
        record.status = 200
        gap = SLOW_GAP_SECONDS if record.model.startswith(SLOW_STREAM) else 0.0
        cut_after = MIDSTREAM_CHUNKS if record.model.startswith(FAULT_MIDSTREAM) else None
        try:
            await response.prepare(request)
            for event in head:
                await response.write(event)
            for index, chunk in enumerate(chunks):
                if cut_after is not None and index == cut_after:
                    # Drop the connection mid-answer, as a crashing provider would; first
                    # let the chunks sent reach the proxy (aiohttp drops bytes still unread
                    # when the connection's error arrives, which on a loaded machine made
                    # the count of chunks delivered a matter of timing).
                    await asyncio.sleep(0.05)
                    transport = request.transport
                    assert transport is not None
                    transport.close()
                    record.is_finished = True
                    return response
                if gap and index:
                    await asyncio.sleep(gap)
                await response.write(chunk)
                record.chunks_sent += 1
            for event in tail:
                await response.write(event)
            await response.write_eof()
        except (asyncio.CancelledError, ConnectionResetError):
            record.is_cancelled = True
            raise
        record.is_finished = True
        return response

    # ------------------------------------------------------------------ OpenAI

    async def chat_completions(self, request: web.Request) -> web.StreamResponse:
        record = await self._record(request)
        body = record.body if isinstance(record.body, dict) else {}
        fault = await self._fault(record, anthropic=False)
        if fault is not None:
            return fault
        if not isinstance(body.get("messages"), list):
            return self._done(record, _openai_error(400, "'messages' is required."))
        prompt, cached = prompt_usage(body)
        count = output_chunks(
            body, SLOW_CHUNKS if record.model.startswith(SLOW_STREAM) else DEFAULT_CHUNKS
        )
        words = [WORDS[i % len(WORDS)] for i in range(count)]
        usage = {
            "prompt_tokens": prompt,
            "completion_tokens": count,
            "total_tokens": prompt + count,
            "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0},
        }
        reports = not record.model.startswith(NO_USAGE)
        created = int(time.time())
        chat_id = f"chatcmpl-fake{len(self.records)}"
        if not record.is_stream:
            if record.model.startswith(SLOW_STREAM):
                await self._think(record, SLOW_ANSWER_SECONDS)
            record.usage = Reported(prompt, cached, count) if reports else None
            answer: dict[str, Any] = {
                "id": chat_id,
                "object": "chat.completion",
                "created": created,
                "model": record.model,
                "choices": [
                    {
                        "index": 0,
                        "message": {
                            "role": "assistant",
                            "content": "".join(words),
                            "refusal": None,
                        },
                        "logprobs": None,
                        "finish_reason": "stop",
                    }
                ],
            }
            if reports:
                answer["usage"] = usage
            return self._done(record, web.json_response(answer, dumps=_dumps))
        options = body.get("stream_options")
        include_usage = isinstance(options, dict) and options.get("include_usage") is True
        extra = {"usage": None} if include_usage else {}
        sse = _sse_spaced if record.model.startswith(SPACED_JSON) else _sse

        def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
            return sse(
                {
                    "id": chat_id,
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": record.model,
                    "choices": [
                        {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
                    ],
                    **extra,
                }
            )

        tail = [chunk({}, "stop")]
        if include_usage and reports:
            record.usage = Reported(prompt, cached, count)
            tail.append(
                sse(
                    {
                        "id": chat_id,
                        "object": "chat.completion.chunk",
                        "created": created,
                        "model": record.model,
                        "choices": [],
                        "usage": usage,
                    }
                )
            )
        tail.append(b"data: [DONE]\n\n")
        return await self._stream(
            request,
            record,
            [chunk({"role": "assistant", "content": ""})],
            [chunk({"content": word}) for word in words],
            tail,
        )

    async def responses(self, request: web.Request) -> web.StreamResponse:
        record = await self._record(request)
        body = record.body if isinstance(record.body, dict) else {}
        fault = await self._fault(record, anthropic=False)
        if fault is not None:
            return fault
        prompt, cached = prompt_usage(body)
        count = output_chunks(body)
        words = [WORDS[i % len(WORDS)] for i in range(count)]
        record.usage = Reported(prompt, cached, count)
        response_id = f"resp_fake{len(self.records)}"
        usage = {
            "input_tokens": prompt,
            "input_tokens_details": {"cached_tokens": cached},
            "output_tokens": count,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": prompt + count,
        }

        def response_object(status: str, output: list[Any], usage: Any) -> dict[str, Any]:
            return {
                "id": response_id,
                "object": "response",
                "created_at": int(time.time()),
                "status": status,
                "model": record.model,
                "output": output,
                "parallel_tool_calls": True,
                "tool_choice": "auto",
                "tools": [],
                "usage": usage,
            }

        message = {
            "type": "message",
            "id": "msg_fake",
            "status": "completed",
            "role": "assistant",
            "content": [{"type": "output_text", "text": "".join(words), "annotations": []}],
        }
        if not record.is_stream:
            answer = response_object("completed", [message], usage)
            return self._done(record, web.json_response(answer, dumps=_dumps))
        head = [
            _sse(
                {
                    "type": "response.created",
                    "sequence_number": 0,
                    "response": response_object("in_progress", [], None),
                },
                "response.created",
            )
        ]
        chunks = [
            _sse(
                {
                    "type": "response.output_text.delta",
                    "sequence_number": i + 1,
                    "item_id": "msg_fake",
                    "output_index": 0,
                    "content_index": 0,
                    "delta": word,
                },
                "response.output_text.delta",
            )
            for i, word in enumerate(words)
        ]
        tail = [
            _sse(
                {
                    "type": "response.completed",
                    "sequence_number": count + 1,
                    "response": response_object("completed", [message], usage),
                },
                "response.completed",
            )
        ]
        return await self._stream(request, record, head, chunks, tail)

    async def embeddings(self, request: web.Request) -> web.StreamResponse:
        record = await self._record(request)
        body = record.body if isinstance(record.body, dict) else {}
        fault = await self._fault(record, anthropic=False)
        if fault is not None:
            return fault
        value = body.get("input")
        items = value if isinstance(value, list) else [value]
        tokens = sum(max(1, len(item) // 4) if isinstance(item, str) else 1 for item in items)
        record.usage = Reported(tokens, 0, 0)
        vector = [round(0.125 * (i + 1), 3) for i in range(EMBEDDING_DIM)]
        encoded: Any = vector
        if body.get("encoding_format") == "base64":
            encoded = base64.b64encode(struct.pack(f"<{EMBEDDING_DIM}f", *vector)).decode()
        answer = {
            "object": "list",
            "data": [
                {"object": "embedding", "index": i, "embedding": encoded} for i in range(len(items))
            ],
            "model": record.model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
        return self._done(record, web.json_response(answer, dumps=_dumps))

    async def models(self, request: web.Request) -> web.StreamResponse:
        record = await self._record(request)
        answer = {
            "object": "list",
            "data": [{"id": "fake-model", "object": "model", "created": 0, "owned_by": "fake"}],
        }
        return self._done(record, web.json_response(answer, dumps=_dumps))

    # ------------------------------------------------------------------ Anthropic

    async def messages(self, request: web.Request) -> web.StreamResponse:
        record = await self._record(request)
        body = record.body if isinstance(record.body, dict) else {}
        fault = await self._fault(record, anthropic=True)
        if fault is not None:
            return fault
        prompt, cached = prompt_usage(body)
        count = output_chunks(
            body, SLOW_CHUNKS if record.model.startswith(SLOW_STREAM) else DEFAULT_CHUNKS
        )
        words = [WORDS[i % len(WORDS)] for i in range(count)]
        record.usage = Reported(prompt, cached, count)
        usage_in = {
            "input_tokens": prompt - cached,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": cached,
        }
        message_id = f"msg_fake{len(self.records)}"
        if not record.is_stream:
            answer = {
                "id": message_id,
                "type": "message",
                "role": "assistant",
                "model": record.model,
                "content": [{"type": "text", "text": "".join(words)}],
                "stop_reason": "end_turn",
                "stop_sequence": None,
                "usage": {**usage_in, "output_tokens": count},
            }
            return self._done(record, web.json_response(answer, dumps=_dumps))
        head = [
            _sse(
                {
                    "type": "message_start",
                    "message": {
                        "id": message_id,
                        "type": "message",
                        "role": "assistant",
                        "model": record.model,
                        "content": [],
                        "stop_reason": None,
                        "stop_sequence": None,
                        "usage": {**usage_in, "output_tokens": 1},
                    },
                },
                "message_start",
            ),
            _sse(
                {
                    "type": "content_block_start",
                    "index": 0,
                    "content_block": {"type": "text", "text": ""},
                },
                "content_block_start",
            ),
            _sse({"type": "ping"}, "ping"),
        ]
        chunks = [
            _sse(
                {
                    "type": "content_block_delta",
                    "index": 0,
                    "delta": {"type": "text_delta", "text": word},
                },
                "content_block_delta",
            )
            for word in words
        ]
        tail = [
            _sse({"type": "content_block_stop", "index": 0}, "content_block_stop"),
            _sse(
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                    "usage": {"output_tokens": count},
                },
                "message_delta",
            ),
            _sse({"type": "message_stop"}, "message_stop"),
        ]
        return await self._stream(request, record, head, chunks, tail)

    async def count_tokens(self, request: web.Request) -> web.StreamResponse:
        record = await self._record(request)
        body = record.body if isinstance(record.body, dict) else {}
        fault = await self._fault(record, anthropic=True)
        if fault is not None:
            return fault
        prompt, _ = prompt_usage(body)
        record.usage = Reported(prompt, 0, 0)
        return self._done(record, web.json_response({"input_tokens": prompt}, dumps=_dumps))


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def _error_body(anthropic: bool, kind: str, message: str) -> bytes:
    if anthropic:
        return orjson.dumps({"type": "error", "error": {"type": kind, "message": message}})
    return orjson.dumps({"error": {"message": message, "type": kind, "param": None, "code": None}})


def _openai_error(status: int, message: str) -> web.Response:
    return web.Response(
        status=status,
        body=_error_body(False, "invalid_request_error", message),
        content_type="application/json",
    )

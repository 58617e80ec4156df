"""Reading Anthropic usage: cache writes split by how long they are kept."""

from __future__ import annotations

import orjson

from billing.money import Usage
from proxy.wire.anthropic import MessagesStreamScanner, messages_usage

SPLIT_USAGE = {
    "input_tokens": 12,
    "cache_read_input_tokens": 100,
    "cache_creation_input_tokens": 50,
    "cache_creation": {"ephemeral_5m_input_tokens": 20, "ephemeral_1h_input_tokens": 30},
    "output_tokens": 7,
}


def test_one_hour_cache_writes_are_read_from_the_split():
    assert messages_usage(SPLIT_USAGE) == Usage(
        input_tokens=12,
        cached_input_tokens=100,
        cache_write_tokens=50,
        cache_write_1h_tokens=30,
        output_tokens=7,
    )


def test_without_a_split_every_cache_write_is_a_five_minute_one():
    usage = {key: value for key, value in SPLIT_USAGE.items() if key != "cache_creation"}
    assert messages_usage(usage).cache_write_1h_tokens == 0  # type: ignore[union-attr]


def test_a_split_larger_than_the_total_is_clamped_to_it():
    usage = {**SPLIT_USAGE, "cache_creation": {"ephemeral_1h_input_tokens": 80}}
    assert messages_usage(usage).cache_write_1h_tokens == 50  # type: ignore[union-attr]


def event(kind: str, data: dict[str, object]) -> bytes:
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


def test_a_stream_keeps_the_split_from_message_start_to_the_final_usage():
    scanner = MessagesStreamScanner()
    start_usage = {**SPLIT_USAGE, "output_tokens": 1}
    scanner.feed(
        event("message_start", {"type": "message_start", "message": {"usage": start_usage}})
    )
    scanner.feed(
        event(
            "message_delta",
            {"type": "message_delta", "delta": {}, "usage": {"output_tokens": 9}},
        )
    )
    assert scanner.state.usage == Usage(
        input_tokens=12,
        cached_input_tokens=100,
        cache_write_tokens=50,
        cache_write_1h_tokens=30,
        output_tokens=9,
    )

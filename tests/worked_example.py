"""PRODUCT.md section 3's worked example as a client spends it: a key of client budget $100
bought for $60 (ratio 0.6) spends exactly $34.20 of client price ($20.52 of cost, $13.68
of profit) through the proxy, with the official ``openai`` SDK against a fake provider.

3 requests of 1,000 prompt tokens (the fake counts 4 characters a token) at $6,840 per 1M
input tokens cost $6.84 each, $11.40 at the key's ratio: $20.52 and $34.20 in all. A
request's hold (its body's bytes as tokens, at the input rate) stays well inside what the
key has left, so none is refused. ``fake_provider_priced`` prices ``MODEL`` at
``INPUT_PRICE`` input, 0 output, on the fake provider.
"""

from __future__ import annotations

import openai

from billing.money import parse_usd
from billing.services import price_set, upstream_save
from tests.proxy.conftest import UPSTREAM_SECRET
from tests.proxy.upstream_fake import FakeUpstream

MODEL = "acme-model"
INPUT_PRICE = parse_usd("6840")
PROMPT = "x" * 4_000
REQUESTS = 3


def fake_provider_priced(fake_upstream: FakeUpstream) -> None:
    """The fake provider as an upstream of the server, ``MODEL`` priced on it."""
    upstream = upstream_save(
        name="fake-openai",
        kind="openai",
        base_url=fake_upstream.openai_base_url,
        api_key=UPSTREAM_SECRET,
    )
    price_set(
        model=MODEL, upstream=upstream, input_per_mtok_nanos=INPUT_PRICE, output_per_mtok_nanos=0
    )


def spend_34_20(base_url: str, secret: str) -> None:
    """The client's calls, through the official SDK with the key's secret."""
    client = openai.OpenAI(base_url=f"{base_url}/v1", api_key=secret, max_retries=0, timeout=20)
    for _ in range(REQUESTS):
        answer = client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": PROMPT}], max_tokens=1
        )
        assert answer.usage is not None and answer.usage.prompt_tokens == 1_000

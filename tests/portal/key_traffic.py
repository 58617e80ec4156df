"""The worked example as a portal client sees it, shared by ``test_key_*.py``.

A reseller ("Acme Resale", support address help@acme.example, Asia/Kolkata) funds the
worked example's key: client budget $100 for a cost of $60 (ratio 0.6). Its client spends
$34.20 through the real reserve/settle path (``tests.dashboard.traffic.served``) on
mock-gpt at $1 input / $0.50 cached per 1M tokens, as two requests and a failure:

========================  ==========  ===========  ==========
request                   cost        client       profit
========================  ==========  ===========  ==========
12,000,000 in, 2 days ago $12.00      $20.00       $8.00
8,000,000 in + 1,040,000  $8.52       $14.20       $5.68
cached, an hour ago
failed, 3 hours ago       $0          $0           $0
total                     $20.52      $34.20       $13.68
========================  ==========  ===========  ==========

The cached reads saved $0.52 at cost, $0.87 (0.866666667) at the client's price. The key
has $65.80 left; the reseller's cost still set aside in it is $39.48.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta

from django.utils import timezone

from accounts.models import Tenant
from billing.models import ModelPrice
from billing.money import parse_usd
from keys.models import ClientKey
from tests.dashboard.traffic import failed, served
from tests.keys.apis.conftest import prepaid_key

RESELLER_NAME = "Acme Resale"
SUPPORT_EMAIL = "help@acme.example"

CLIENT_SPENT = "34.20"
CLIENT_LEFT = "65.80"
CLIENT_SAVED = "0.87"

# Every figure of the reseller's side of the worked example: the amounts (as a page,
# a CSV or a nano-dollar count could write them) no portal response may contain.
RESELLER_AMOUNTS = {
    "cost spent": "20.52",
    "profit": "13.68",
    "cost funded": "60.00",
    "cost left": "39.48",
    "first request's cost": "12.00",
    "first request's profit": "8.00",
    "second request's cost": "8.52",
    "second request's profit": "5.68",
    "cache saving at cost": "0.52",
}
# The price ratio and the margin, as the dashboard writes them.
RESELLER_TERMS = [r"(?<![\d.,])0\.60*(?!\d)", r"(?<![\d.,])40(?:\.00)? ?%"]
RESELLER_WORDS = re.compile(r"\b(cost|costs|profit|profits|margin|margins|ratio|ratios)\b", re.I)


def amount_patterns(text: str) -> list[str]:
    """``20.52`` as a page, a CSV or a count of nano-dollars may write it: ``20.52``
    (``$20.52``, ``20.520000000``) and ``20520000000``, never inside a longer number."""
    nanos = parse_usd(text)
    dollars = re.escape(text)
    return [rf"(?<![\d.,]){dollars}0*(?![\d])", rf"(?<!\d){nanos}(?!\d)"]


def reseller_figures() -> re.Pattern[str]:
    patterns = [p for amount in RESELLER_AMOUNTS.values() for p in amount_patterns(amount)]
    return re.compile("|".join([*patterns, *RESELLER_TERMS]))


@dataclass(frozen=True)
class Traffic:
    key: ClientKey
    first_request_id: str
    second_request_id: str
    failed_request_id: str


def acme(tenant: Tenant) -> Tenant:
    tenant.name = RESELLER_NAME
    tenant.support_email = SUPPORT_EMAIL
    tenant.timezone = "Asia/Kolkata"
    tenant.save()
    return tenant


def worked_example(tenant: Tenant, price: ModelPrice, *, label: str = "acme-corp-prod") -> Traffic:
    """The worked example's key of ``tenant`` with $34.20 of client spend (see above)."""
    key = prepaid_key(tenant, label=label)
    now = timezone.now()
    first, second, broken = f"req-{label}-1", f"req-{label}-2", f"req-{label}-failed"
    served(
        key,
        price,
        request_id=first,
        at=now - timedelta(days=2),
        input_tokens=12_000_000,
        latency_ms=950,
    )
    served(
        key,
        price,
        request_id=second,
        at=now - timedelta(hours=1),
        input_tokens=8_000_000,
        cached_input_tokens=1_040_000,
        latency_ms=1_210,
    )
    failed(key, price, request_id=broken, at=now - timedelta(hours=3))
    key = ClientKey.objects.select_related("tenant").get(pk=key.pk)
    assert key.client_spent_nanos == parse_usd(CLIENT_SPENT)
    assert key.cost_spent_nanos == parse_usd("20.52")
    return Traffic(
        key=key, first_request_id=first, second_request_id=second, failed_request_id=broken
    )

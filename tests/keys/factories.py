"""Key rows for tests that need keys but not the money flows that create them.

Only wallet-funded keys: they set nothing aside, so a row made here leaves the books as
they were. A prepaid key must come from ``keys.services.key_create``, which funds it.
"""

from __future__ import annotations

import factory
from factory.django import DjangoModelFactory

from accounts.hashing import CLIENT_KEY_PREFIX, secret_generate
from billing.money import NANOS_PER_USD
from billing.selectors import wallet_for_tenant
from keys.models import ClientKey


class WalletKeyFactory(DjangoModelFactory[ClientKey]):
    """``WalletKeyFactory.create(tenant=t)``: an active wallet-funded key at ratio 1:1."""

    class Meta:
        model = ClientKey

    class Params:
        new_secret = factory.LazyFunction(lambda: secret_generate(CLIENT_KEY_PREFIX))

    tenant = None  # required: every key belongs to the tenant under test
    wallet = factory.LazyAttribute(lambda o: wallet_for_tenant(tenant=o.tenant))
    label = factory.Sequence(lambda n: f"key-{n}")
    prefix = factory.LazyAttribute(lambda o: o.new_secret.prefix)
    digest = factory.LazyAttribute(lambda o: o.new_secret.digest)
    last4 = factory.LazyAttribute(lambda o: o.new_secret.last4)
    funding = ClientKey.Funding.WALLET
    ratio_cost_nanos = NANOS_PER_USD
    ratio_client_nanos = NANOS_PER_USD

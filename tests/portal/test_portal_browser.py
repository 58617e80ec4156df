"""The client portal as a client uses it, in a real browser (Chromium) against the real
server: issue 13's walk-through.

A reseller ("Acme AI", support help@acme.example) sells a key of client budget $100 bought
for $60. Its client opens /portal/, asks for a code, reads it from the mailbox (the
server's emails land as files), signs in, pastes the key and sees $100.00 and never the
$60.00 it cost. The client spends $34.20 through the proxy with the official SDK: the
portal shows $34.20 spent and $65.80 left, never the $20.52 cost or the $13.68 profit. A
second address binds the same key (without JavaScript) and sees the same balance.

Every page is checked for Content-Security-Policy violations and, at 390 px, for sideways
scrolling; screenshots at 1280 and 390 px go to var/screenshots/.
"""

from __future__ import annotations

import io
import re
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from django.core.management import call_command
from playwright.sync_api import Page, expect

from accounts.models import Tenant
from billing.money import parse_usd
from keys.models import ClientKey
from keys.services import key_create
from portal.models import PortalBinding
from tests.browser import Browser, browsers, needs_chromium
from tests.mailbox import file_email_env, wait_for_mail
from tests.proxy.conftest import ProxyServer, fake_upstream, start_proxy_server
from tests.proxy.upstream_fake import FakeUpstream
from tests.worked_example import REQUESTS, fake_provider_priced, spend_34_20

__all__ = ["fake_upstream", "start_proxy_server"]  # fixtures, used here as in tests/proxy

pytestmark = [needs_chromium, pytest.mark.usefixtures("books_balance")]

expect.set_options(timeout=15_000)

# What the reseller pays and earns: never on a portal page.
HIDDEN = ("$60.00", "60.00", "$20.52", "20.52", "$13.68", "13.68")
CODE = re.compile(r"\b(\d{6})\b")


@pytest.fixture(scope="module")
def outbox(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("portal-outbox")


@pytest.fixture(scope="module")
def server(start_proxy_server: Callable[..., ProxyServer], outbox: Path) -> ProxyServer:
    call_command("collectstatic", "--noinput", verbosity=0, stdout=io.StringIO())
    # The server's emails land as files the test reads, as a person reads their inbox.
    return start_proxy_server(**file_email_env(outbox))


@pytest.fixture
def sold_key(
    transactional_db: None,
    make_reseller: Callable[..., tuple[Tenant, object]],
    fake_upstream: FakeUpstream,
) -> str:
    """Acme AI's key of client budget $100 bought for $60; returns its secret. The rows
    first: Playwright's sync API runs an event loop in this thread, where Django refuses
    database calls."""
    tenant, _ = make_reseller(email="owner@acme.example", balance="200")
    tenant.name = "Acme AI"
    tenant.support_email = "help@acme.example"
    tenant.save()
    fake_provider_priced(fake_upstream)
    issued = key_create(
        tenant=tenant,
        actor=None,
        label="Client A production",
        client_budget_nanos=parse_usd("100"),
        your_cost_nanos=parse_usd("60"),
    )
    return issued.secret


def traced(page: Page, requests: int) -> None:
    """Reload the key's page until its latest requests list all ``requests`` (the proxy
    writes traces in batches: a first reload may find some of them)."""
    rows = page.locator("#key-recent-table tbody tr")
    deadline = time.monotonic() + 20
    while rows.count() < requests:
        assert time.monotonic() < deadline, "the requests never reached the key's page"
        time.sleep(0.5)
        page.reload()
    assert rows.count() == requests


class Client:
    """One person in one browser: signs in with a code, binds keys, reads what they see
    (never what the reseller pays or earns)."""

    def __init__(self, browser: Browser, outbox: Path) -> None:
        self.browser, self.page, self.base, self.outbox = (
            browser,
            browser.page,
            browser.base_url,
            outbox,
        )

    def assert_clean(self) -> None:
        self.browser.assert_clean()
        text = self.page.content()
        assert not [amount for amount in HIDDEN if amount in text], self.page.url

    def shoot(self, name: str) -> None:
        self.browser.check(name)
        self.assert_clean()

    def sign_in(self, email: str, *, shots: bool = False) -> None:
        page = self.page
        page.goto(f"{self.base}/portal/")
        page.fill("input[type=email]", email)
        if shots:
            self.shoot("sign-in")
        page.locator("form:has(input[type=email]) button[type=submit]").click()
        page.wait_for_url(f"{self.base}/portal/code/")
        code_input = page.locator("input[autocomplete=one-time-code]")
        expect(code_input).to_be_visible()
        code = CODE.search(wait_for_mail(self.outbox, to=email, having=CODE))
        assert code is not None
        code_input.fill(code.group(1))
        if shots:
            self.shoot("code")
        page.locator("form:has(input[autocomplete=one-time-code]) button[type=submit]").click()
        page.wait_for_url(f"{self.base}/portal/")
        expect(page.get_by_text(email)).to_be_visible()
        self.assert_clean()

    def bind(self, secret: str) -> None:
        page = self.page
        page.fill("input[name=key]", secret)
        page.locator("form:has(input[name=key]) button[type=submit]").click()
        page.wait_for_load_state()
        expect(page.get_by_text("Client A production").first).to_be_visible()
        self.assert_clean()

    def open_key(self) -> None:
        page = self.page
        page.get_by_role("link", name="Client A production").first.click()
        page.wait_for_url(re.compile(r"/portal/keys/\d+/$"))
        self.assert_clean()


def test_a_client_signs_in_binds_the_key_and_follows_its_balance(
    server: ProxyServer, outbox: Path, sold_key: str
) -> None:
    # The browser closed before the database is read (see tests/browser.py).
    with browsers(server.url, tag="portal") as open_browser:
        ann = Client(open_browser(javascript=True), outbox)
        page = ann.page
        ann.sign_in("ann@client.example", shots=True)
        ann.shoot("empty")
        ann.bind(sold_key)
        main = page.locator("main")
        expect(main).to_contain_text("$100.00")
        expect(main).to_contain_text("Acme AI")
        expect(main).to_contain_text("help@acme.example")
        ann.shoot("keys")
        ann.open_key()
        expect(main).to_contain_text("$100.00")

        spend_34_20(server.url, sold_key)

        # The balance moves with each request; its traces reach the reports a moment
        # later (the proxy writes them in batches).
        page.reload()
        expect(main).to_contain_text("$34.20")
        expect(main).to_contain_text("$65.80")
        traced(page, REQUESTS)
        ann.shoot("key")
        page.goto(f"{server.url}/portal/")
        expect(main).to_contain_text("$65.80")
        ann.assert_clean()

        # A teammate, without JavaScript: the same key, the same balance.
        bob = Client(open_browser(javascript=False, tag="portal"), outbox)
        page = bob.page
        bob.sign_in("bob@client.example")
        bob.bind(sold_key)
        expect(page.locator("main")).to_contain_text("$65.80")
        bob.open_key()
        expect(page.locator("main")).to_contain_text("$34.20")
        expect(page.locator("main")).to_contain_text("$65.80")
        bob.shoot("key-nojs")

    key = ClientKey.objects.get()
    assert PortalBinding.objects.filter(key=key).count() == 2
    assert (key.client_spent_nanos, key.cost_spent_nanos) == (
        parse_usd("34.20"),
        parse_usd("20.52"),
    )

"""Signing in to the portal with an emailed code: the whole flow through the pages, read
from the test mailbox, and every way a code is refused."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from datetime import timedelta

import pytest
from django.core import mail
from django.core.cache import cache
from django.core.mail import EmailMultiAlternatives
from django.http import HttpResponse, HttpResponseBase
from django.test import Client
from django.utils import timezone
from pytest_django.fixtures import Settings

from portal.access import SESSION_CLIENT
from portal.exceptions import CodeDead, CodeMissing, CodeThrottled, CodeWrong
from portal.models import PortalClient, PortalCode
from portal.services import code_send, code_verify

pytestmark = pytest.mark.django_db

CODE = re.compile(r"\b(\d{6})\b")
# What differs between two renderings of one page: its CSRF tokens (masked anew each time).
CSRF_VALUES = re.compile(rb'(name="csrfmiddlewaretoken" value=|"X-CSRFToken": )"[^"]+"')


@pytest.fixture(autouse=True)
def fresh_counts(settings: Settings) -> Iterator[None]:
    """No send or bind counts left by another test (on Redis the cache outlives a test),
    and no wait between wrong codes unless a test asks for it."""
    settings.PORTAL_CODE_THROTTLE_FACTOR = 0
    cache.clear()
    yield
    cache.clear()


def ask(browser: Client, email: str, **extra: str) -> HttpResponse:
    return browser.post("/portal/", {"email": email, **extra})  # type: ignore[return-value]


def enter(browser: Client, code: str, **extra: str) -> HttpResponse:
    return browser.post("/portal/code/", {"code": code, **extra})  # type: ignore[return-value]


def last_code(to: str) -> str:
    """The code in the newest email to ``to``."""
    message = [m for m in mail.outbox if m.to == [to]][-1]
    match = CODE.search(str(message.body))
    assert match is not None
    return match.group(1)


def signed_in_as(browser: Client) -> int | None:
    return browser.session.get(SESSION_CLIENT)


def a_wrong_code(right: str) -> str:
    return f"{(int(right) + 1) % 1_000_000:06d}"


# ---------------------------------------------------------------------- the flow


def test_an_emailed_code_signs_the_address_in() -> None:
    browser = Client()
    page = browser.get("/portal/")
    assert page.status_code == 200
    html = page.content.decode()
    assert re.search(
        r'<input type="email" name="email"[^>]*autocomplete="email"[^>]*required', html
    )
    assert "we email you a 6-digit code" in html
    assert "No password" in html

    asked = ask(browser, "  Ann@Example.COM ")
    assert asked.status_code == 302
    assert asked["Location"] == "/portal/code/"

    (message,) = mail.outbox
    assert message.to == ["ann@example.com"]
    code = last_code("ann@example.com")
    assert message.subject == f"{code} is your Tollgate sign-in code"
    assert "10 minutes" in str(message.body) and "only once" in str(message.body)
    assert "ignore this email" in str(message.body)
    assert isinstance(message, EmailMultiAlternatives)
    html_body, mime = message.alternatives[0]
    assert mime == "text/html"
    assert code in str(html_body) and "10 minutes" in str(html_body)

    page = browser.get("/portal/code/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "ann@example.com" in html
    assert re.search(
        r'<input type="text" name="code"[^>]*autocomplete="one-time-code"[^>]*'
        r'inputmode="numeric"[^>]*pattern="\[0-9\]\*"[^>]*maxlength="6"[^>]*required',
        html,
    )
    assert "Send a new code" in html and "Use another email" in html

    done = enter(browser, code)
    assert done.status_code == 302
    assert done["Location"] == "/portal/"
    client = PortalClient.objects.get(email="ann@example.com")
    assert client.last_sign_in_at is not None
    assert signed_in_as(browser) == client.pk
    home = browser.get("/portal/")
    assert b"Your API keys" in home.content
    assert b"ann@example.com" in home.content
    # The pending sign-in is over: the code page sends back home.
    assert browser.get("/portal/code/")["Location"] == "/portal/"


def test_signing_in_gives_the_session_a_new_key() -> None:
    browser = Client()
    ask(browser, "ann@example.com")
    before = browser.cookies["sessionid"].value
    enter(browser, last_code("ann@example.com"))
    assert browser.cookies["sessionid"].value != before
    assert signed_in_as(browser) is not None


def test_a_code_with_spaces_is_read_as_its_digits() -> None:
    browser = Client()
    ask(browser, "ann@example.com")
    code = last_code("ann@example.com")
    assert enter(browser, f"{code[:3]} {code[3:]}").status_code == 302


def test_a_safe_next_is_followed_after_signing_in_and_another_site_is_not() -> None:
    browser = Client()
    ask(browser, "ann@example.com", next="/portal/keys/7/")
    assert enter(browser, last_code("ann@example.com"))["Location"] == "/portal/keys/7/"
    targets = ("https://evil.example/portal/", "//evil.example/portal/", "/dashboard/")
    for n, target in enumerate(targets):
        browser, address = Client(), f"user{n}@example.com"
        ask(browser, address, next=target)
        assert enter(browser, last_code(address))["Location"] == "/portal/"


def test_the_code_page_without_a_pending_address_sends_home() -> None:
    page = Client().get("/portal/code/")
    assert page.status_code == 302
    assert page["Location"] == "/portal/"


def test_a_malformed_address_is_asked_again() -> None:
    page = ask(Client(), "not-an-address")
    assert page.status_code == 400
    assert b"valid email address" in page.content
    assert mail.outbox == []


def test_the_sign_in_pages_are_never_cached() -> None:
    browser = Client()
    for page in (
        browser.get("/portal/"),
        ask(browser, "a@example.com"),
        browser.get("/portal/code/"),
    ):
        assert "no-store" in page["Cache-Control"]


# ---------------------------------------------------------------------- refused codes


def test_an_expired_code_is_refused(settings: Settings) -> None:
    browser = Client()
    ask(browser, "ann@example.com")
    code = last_code("ann@example.com")
    row = PortalCode.objects.get(email="ann@example.com")
    assert row.valid_until is not None
    # Issued for PORTAL_CODE_SECONDS: it is good until then, and not a second longer.
    lifetime = row.valid_until - (row.last_generated_timestamp or timezone.now())
    assert abs(lifetime.total_seconds() - settings.PORTAL_CODE_SECONDS) < 5
    PortalCode.objects.filter(pk=row.pk).update(valid_until=timezone.now() - timedelta(seconds=1))
    page = enter(browser, code)
    assert page.status_code == 400
    assert b"expired" in page.content
    assert signed_in_as(browser) is None


def test_a_used_code_is_refused() -> None:
    first = Client()
    ask(first, "ann@example.com")
    code = last_code("ann@example.com")
    assert enter(first, code).status_code == 302
    # A second browser asks for the same address (within the cooldown: no new code) and
    # tries the code already used.
    second = Client()
    ask(second, "ann@example.com")
    assert len(mail.outbox) == 1
    page = enter(second, code)
    assert page.status_code == 400
    assert b"no code waiting" in page.content
    assert signed_in_as(second) is None


def test_the_sixth_try_is_refused_even_with_the_right_code() -> None:
    browser = Client()
    ask(browser, "ann@example.com")
    code = last_code("ann@example.com")
    wrong = a_wrong_code(code)
    for left in (4, 3, 2, 1):
        page = enter(browser, wrong)
        assert page.status_code == 400
        assert f"({left} tr".encode() in page.content
    page = enter(browser, wrong)
    assert page.status_code == 400
    assert b"no longer works" in page.content
    assert PortalCode.objects.get(email="ann@example.com").digest == ""
    page = enter(browser, code)
    assert page.status_code == 400
    assert b"no longer works" in page.content
    assert b"Send a new code" in page.content
    assert signed_in_as(browser) is None
    assert not PortalClient.objects.filter(email="ann@example.com").exists()


def test_a_new_code_works_after_a_dead_one(settings: Settings) -> None:
    settings.PORTAL_CODE_COOLDOWN_SECONDS = 0
    browser = Client()
    ask(browser, "ann@example.com")
    wrong = a_wrong_code(last_code("ann@example.com"))
    for _ in range(settings.PORTAL_CODE_MAX_ATTEMPTS):
        enter(browser, wrong)
    resent = ask(browser, "ann@example.com", resend="1")
    assert resent["Location"] == "/portal/code/"
    assert b"A new code is on its way" in browser.get("/portal/code/").content
    assert enter(browser, last_code("ann@example.com")).status_code == 302


def test_a_quick_retry_after_a_wrong_code_waits(settings: Settings) -> None:
    settings.PORTAL_CODE_THROTTLE_FACTOR = 1
    browser = Client()
    ask(browser, "ann@example.com")
    code = last_code("ann@example.com")
    assert enter(browser, a_wrong_code(code)).status_code == 400
    page = enter(browser, code)
    assert page.status_code == 429
    assert page["Retry-After"] == "1"
    assert b"wait 1 s" in page.content
    assert signed_in_as(browser) is None
    # The refused try was not checked, so not counted; once the wait is over the right
    # code signs in.
    row = PortalCode.objects.get(email="ann@example.com")
    assert row.throttling_failure_count == 1
    assert row.throttling_failure_timestamp is not None
    PortalCode.objects.filter(pk=row.pk).update(
        throttling_failure_timestamp=row.throttling_failure_timestamp - timedelta(seconds=2)
    )
    assert enter(browser, code).status_code == 302


def codes_that_differ(browser: Client, first: str, second: str) -> tuple[str, str]:
    """Codes for the addresses ``first`` and ``second`` (asked from ``browser``, pending
    ``second`` then) whose digits differ: asked again while they draw the same."""
    ask(Client(), first)
    while True:
        ask(browser, second)
        if last_code(first) != last_code(second):
            return last_code(first), last_code(second)
        PortalCode.objects.filter(email=second).update(last_generated_timestamp=None)


def test_a_code_for_one_address_never_signs_in_another() -> None:
    bob = Client()
    ann_code, _ = codes_that_differ(bob, "ann@example.com", "bob@example.com")
    # Bob's browser, pending bob@, with Ann's code: an address in the form is not read.
    page = enter(bob, ann_code, email="ann@example.com")
    assert page.status_code == 400
    assert b"not right" in page.content
    assert signed_in_as(bob) is None
    assert not PortalClient.objects.exists()
    # At the service too, and Ann's code still signs Ann in.
    with pytest.raises(CodeWrong):
        code_verify(email="bob@example.com", code=ann_code)
    assert code_verify(email="ANN@example.com", code=ann_code).email == "ann@example.com"


def test_the_same_digits_for_another_address_hash_differently() -> None:
    code_send(email="ann@example.com", ip="192.0.2.1")
    code_send(email="bob@example.com", ip="192.0.2.1")
    ann = PortalCode.objects.get(email="ann@example.com")
    # Bob's row holding the very digest of Ann's code: Ann's digits still do not sign Bob in.
    PortalCode.objects.filter(email="bob@example.com").update(digest=ann.digest)
    with pytest.raises(CodeWrong):
        code_verify(email="bob@example.com", code=last_code("ann@example.com"))


def test_an_address_that_asked_for_no_code_has_none_to_enter() -> None:
    with pytest.raises(CodeMissing):
        code_verify(email="nobody@example.com", code="123456")
    assert not PortalClient.objects.exists()


def test_a_code_is_stored_only_as_a_keyed_hash() -> None:
    ask(Client(), "ann@example.com")
    code = last_code("ann@example.com")
    row = PortalCode.objects.filter(email="ann@example.com").values().get()
    assert row["digest"] and row["digest"] != code
    assert len(row["digest"]) == 64
    assert not [name for name, value in row.items() if code in str(value)]


def test_a_code_that_is_not_six_digits_is_not_checked_or_counted() -> None:
    browser = Client()
    ask(browser, "ann@example.com")
    page = enter(browser, "12ab56")
    assert page.status_code == 400
    assert b"Enter the 6 digits" in page.content
    assert PortalCode.objects.get(email="ann@example.com").throttling_failure_count == 0


def test_parallel_wrong_guesses_are_each_counted() -> None:
    """The service, as two requests at once would call it: each wrong code is counted under
    the row's lock, so the fifth kills the code whatever their order."""
    code_send(email="ann@example.com", ip="192.0.2.1")
    code = last_code("ann@example.com")
    wrong = a_wrong_code(code)
    for _ in range(4):
        with pytest.raises(CodeWrong):
            code_verify(email="ann@example.com", code=wrong)
    with pytest.raises(CodeDead):
        code_verify(email="ann@example.com", code=wrong)
    with pytest.raises(CodeDead):
        code_verify(email="ann@example.com", code=code)


def test_a_throttled_code_is_not_counted(settings: Settings) -> None:
    settings.PORTAL_CODE_THROTTLE_FACTOR = 1
    code_send(email="ann@example.com", ip="192.0.2.1")
    code = last_code("ann@example.com")
    with pytest.raises(CodeWrong):
        code_verify(email="ann@example.com", code=a_wrong_code(code))
    for _ in range(10):
        with pytest.raises(CodeThrottled):
            code_verify(email="ann@example.com", code=a_wrong_code(code))
    assert PortalCode.objects.get(email="ann@example.com").throttling_failure_count == 1


# ---------------------------------------------------------------------- sending


def test_codes_to_one_address_are_throttled_with_the_same_answer(
    settings: Settings,
) -> None:
    settings.PORTAL_CODE_COOLDOWN_SECONDS = 0
    settings.PORTAL_CODES_PER_EMAIL_PER_HOUR = 2
    answers = [ask(Client(REMOTE_ADDR=f"192.0.2.{n}"), "ann@example.com") for n in range(4)]
    assert len(mail.outbox) == 2
    assert {(a.status_code, a["Location"]) for a in answers} == {(302, "/portal/code/")}


def test_codes_from_one_network_are_throttled_with_the_same_answer(
    settings: Settings,
) -> None:
    settings.PORTAL_CODES_PER_IP_PER_HOUR = 2
    answers = [ask(Client(), f"user{n}@example.com") for n in range(4)]
    assert [m.to for m in mail.outbox] == [["user0@example.com"], ["user1@example.com"]]
    assert {(a.status_code, a["Location"]) for a in answers} == {(302, "/portal/code/")}
    # Another network still gets its codes.
    ask(Client(REMOTE_ADDR="198.51.100.7"), "user9@example.com")
    assert len(mail.outbox) == 3


def test_a_second_code_within_the_cooldown_is_not_sent_and_the_first_still_works() -> None:
    browser = Client()
    ask(browser, "ann@example.com")
    first = last_code("ann@example.com")
    assert ask(browser, "ann@example.com", resend="1")["Location"] == "/portal/code/"
    assert len(mail.outbox) == 1
    assert enter(browser, first).status_code == 302


def test_a_new_code_replaces_the_last(settings: Settings) -> None:
    settings.PORTAL_CODE_COOLDOWN_SECONDS = 0
    browser = Client()
    ask(browser, "ann@example.com")
    first = second = last_code("ann@example.com")
    while second == first:
        ask(browser, "ann@example.com", resend="1")
        second = last_code("ann@example.com")
    assert enter(browser, first).status_code == 400
    assert enter(browser, second).status_code == 302


def _page_without(response: HttpResponseBase, address: str) -> bytes:
    assert isinstance(response, HttpResponse)
    return CSRF_VALUES.sub(rb"\1-", response.content).replace(address.encode(), b"ADDRESS")


def test_a_known_and_an_unknown_address_get_the_same_answer(settings: Settings) -> None:
    PortalClient.objects.create(email="known@example.com")
    settings.PORTAL_CODES_PER_EMAIL_PER_HOUR = 1
    pages = []
    for address in ("known@example.com", "unknown@example.com", "known@example.com"):
        # The third ask is refused (one code an hour): its answer is the same again.
        browser = Client()
        asked = ask(browser, address)
        assert (asked.status_code, asked["Location"]) == (302, "/portal/code/")
        page = browser.get("/portal/code/")
        pages.append((page.status_code, _page_without(page, address)))
    assert len(mail.outbox) == 2
    assert pages[0] == pages[1] == pages[2]
    # Asking made no client row for the unknown address.
    assert not PortalClient.objects.filter(email="unknown@example.com").exists()


def test_a_code_is_never_logged(caplog: pytest.LogCaptureFixture, settings: Settings) -> None:
    settings.PORTAL_CODES_PER_EMAIL_PER_HOUR = 1
    with caplog.at_level(logging.INFO, logger="portal"):
        ask(Client(), "ann@example.com")
        ask(Client(), "ann@example.com")  # refused: logged
        code = last_code("ann@example.com")
        enter(Client(), code)
    assert "not sent" in caplog.text
    assert code not in caplog.text


def test_a_mail_server_failure_says_so_and_leaves_no_code(settings: Settings) -> None:
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST = "127.0.0.1"
    settings.EMAIL_PORT = 9  # discard: nothing listens, the connection is refused
    settings.EMAIL_TIMEOUT = 5
    browser = Client()
    page = ask(browser, "ann@example.com")
    assert page.status_code == 503
    assert b"could not send the email" in page.content
    row = PortalCode.objects.get(email="ann@example.com")
    assert row.digest == "" and row.valid_until is None
    # The visitor may try again at once (no cooldown from a code never sent).
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    assert ask(browser, "ann@example.com")["Location"] == "/portal/code/"
    assert enter(browser, last_code("ann@example.com")).status_code == 302


# ---------------------------------------------------------------------- CSRF


def test_every_sign_in_form_needs_its_csrf_token() -> None:
    browser = Client(enforce_csrf_checks=True)
    assert browser.post("/portal/", {"email": "ann@example.com"}).status_code == 403
    assert mail.outbox == []
    # With the page's token it goes through; the code form then needs one too.
    browser.get("/portal/")
    token = browser.cookies["csrftoken"].value
    asked = browser.post("/portal/", {"email": "ann@example.com", "csrfmiddlewaretoken": token})
    assert asked.status_code == 302
    code = last_code("ann@example.com")
    assert browser.post("/portal/code/", {"code": code}).status_code == 403
    assert signed_in_as(browser) is None
    done = browser.post("/portal/code/", {"code": code, "csrfmiddlewaretoken": token})
    assert done.status_code == 302
    assert signed_in_as(browser) is not None
    # Signing out too.
    assert browser.post("/portal/sign-out/").status_code == 403
    assert signed_in_as(browser) is not None

"""Codes under real concurrency: threads, each on its own PostgreSQL connection, released
together. The code's row lock is what keeps parallel guesses from passing the attempt limit,
a right code from being used twice, and two asks from sending two codes; SQLite runs one
writer at a time and would prove nothing, so the module is skipped there."""

from __future__ import annotations

import re
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from django.core import mail
from django.core.cache import cache
from django.db import connection
from pytest_django.fixtures import Settings

from portal.exceptions import CodeDead, CodeMissing, CodeWrong
from portal.models import PortalClient, PortalCode
from portal.services import code_send, code_verify

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

THREADS = 12
BARRIER_TIMEOUT_SECONDS = 30
CODE = re.compile(r"\b(\d{6})\b")


@pytest.fixture(autouse=True)
def fresh_counts(settings: Settings) -> Iterator[None]:
    settings.PORTAL_CODE_THROTTLE_FACTOR = 0
    cache.clear()
    yield
    cache.clear()


def run_together(work: Callable[[int], Any]) -> Counter[str]:
    """``work(i)`` on THREADS threads released at once; how many ended each way (the
    result's or the exception's class name)."""
    barrier = threading.Barrier(THREADS)

    def run(index: int) -> str:
        try:
            connection.ensure_connection()
            barrier.wait(timeout=BARRIER_TIMEOUT_SECONDS)
            return type(work(index)).__name__
        except Exception as exc:  # every outcome is counted and asserted by the caller
            return type(exc).__name__
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=THREADS) as pool:
        return Counter(pool.map(run, range(THREADS)))


def sent_code() -> str:
    code_send(email="ann@example.com", ip="192.0.2.1")
    match = CODE.search(str(mail.outbox[-1].body))
    assert match is not None
    return match.group(1)


def test_parallel_wrong_guesses_never_get_past_the_attempt_limit(settings: Settings) -> None:
    code = sent_code()
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"
    outcomes = run_together(lambda _: code_verify(email="ann@example.com", code=wrong))
    # Four wrong codes are told how many tries are left, the fifth kills the code, and
    # every later guess finds it dead: none is checked past the limit.
    assert outcomes == {
        CodeWrong.__name__: settings.PORTAL_CODE_MAX_ATTEMPTS - 1,
        CodeDead.__name__: THREADS - settings.PORTAL_CODE_MAX_ATTEMPTS + 1,
    }
    row = PortalCode.objects.get(email="ann@example.com")
    assert row.throttling_failure_count == settings.PORTAL_CODE_MAX_ATTEMPTS
    assert row.digest == ""
    with pytest.raises(CodeDead):
        code_verify(email="ann@example.com", code=code)


def test_a_right_code_entered_in_parallel_signs_in_once() -> None:
    code = sent_code()
    outcomes = run_together(lambda _: code_verify(email="ann@example.com", code=code))
    assert outcomes == {PortalClient.__name__: 1, CodeMissing.__name__: THREADS - 1}
    assert PortalClient.objects.filter(email="ann@example.com").count() == 1


def test_parallel_asks_send_one_code() -> None:
    outcomes = run_together(lambda _: code_send(email="ann@example.com", ip="192.0.2.1"))
    assert outcomes == {"NoneType": THREADS}
    assert len(mail.outbox) == 1
    assert PortalCode.objects.filter(email="ann@example.com").count() == 1

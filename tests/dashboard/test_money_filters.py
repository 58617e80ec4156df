"""How pages write amounts: whole cents, half up; a charge under half a cent exactly."""

from __future__ import annotations

import pytest

from billing.money import parse_usd
from pages.templatetags.money import usd, usd_exact, usd_input
from pages.templatetags.numbers import days_left


@pytest.mark.parametrize(
    ("amount", "shown"),
    [
        ("0", "$0.00"),
        ("34.2", "$34.20"),
        ("1234567.891", "$1,234,567.89"),
        ("0.005", "$0.01"),  # half a cent rounds up
        ("0.000975", "$0.000975"),  # a first demo request: not "$0.00"
        ("-69.48", "−$69.48"),
        ("-0.000001", "−$0.000001"),
    ],
)
def test_usd(amount: str, shown: str) -> None:
    assert usd(parse_usd(amount)) == shown


def test_usd_exact_and_input() -> None:
    assert usd_exact(parse_usd("0.000123456")) == "$0.000123456"
    assert usd_input(parse_usd("60")) == "60.00"
    assert usd_input(parse_usd("0.0001")) == "0.0001"
    assert usd(None) == usd_exact(None) == "—"
    assert usd_input(None) == ""


@pytest.mark.parametrize(
    ("days", "text"),
    [
        (None, "—"),
        (0, "Less than a day"),
        (1, "1 day"),
        (365, "365 days"),
        (366, "More than a year"),
        (76_705, "More than a year"),
    ],
)
def test_a_runway_reads_in_days_up_to_a_year(days: int | None, text: str) -> None:
    assert days_left(days) == text

"""Validators behind the pattern tier: Luhn, card ranges, IBAN, SSN rules, dates."""

from __future__ import annotations

import pytest

from detectors.pii._checks import card_brand, iban_valid, is_date, luhn_valid, ssn_valid


@pytest.mark.parametrize(
    ("digits", "ok"),
    [
        ("4111111111111111", True),
        ("4111111111111112", False),
        ("378282246310005", True),
        ("79927398713", True),  # the textbook Luhn example
        ("79927398710", False),
        ("0", True),
    ],
)
def test_luhn(digits: str, ok: bool) -> None:
    assert luhn_valid(digits) is ok


@pytest.mark.parametrize(
    ("digits", "brand"),
    [
        ("4111111111111111", "visa"),
        ("4222222222222", "visa"),
        ("5500000000000004", "mastercard"),
        ("2720990000000007", "mastercard"),
        ("2721000000000000", None),  # just past the 2-series range
        ("378282246310005", "amex"),
        ("37828224631000", None),  # amex is 15 digits
        ("6011111111111117", "discover"),
        ("3530111333300000", "jcb"),
        ("3598899323053410", None),  # "35" outside 3528-3589 is no JCB number
        ("30569309025904", "diners"),
        ("6304000000000000", "maestro"),
        ("0000000000000000", None),
        ("9999999999999995", None),
    ],
)
def test_card_brand(digits: str, brand: str | None) -> None:
    assert card_brand(digits) == brand


@pytest.mark.parametrize(
    ("iban", "ok"),
    [
        ("DE89370400440532013000", True),
        ("de89370400440532013000", True),
        ("DE89370400440532013001", False),
        ("GB82WEST12345698765432", True),
        ("GB82WEST12345698765433", False),
        ("NO9386011117947", True),
        ("DE89 3704", False),
        ("", False),
    ],
)
def test_iban(iban: str, ok: bool) -> None:
    assert iban_valid(iban) is ok


@pytest.mark.parametrize(
    ("ssn", "ok"),
    [
        ("536-22-8726", True),
        ("001-01-0001", True),
        ("899-99-9999", True),
        ("000-22-8726", False),
        ("666-22-8726", False),
        ("900-22-8726", False),
        ("999-22-8726", False),
        ("536-00-8726", False),
        ("536-22-0000", False),
        ("555-55-5555", False),
        ("078-05-1120", False),
        ("123-45-6789", False),
    ],
)
def test_ssn_rules(ssn: str, ok: bool) -> None:
    area, group, serial = ssn.split("-")
    assert ssn_valid(area, group, serial) is ok


@pytest.mark.parametrize(
    ("groups", "seps", "ok"),
    [
        (["2024", "01", "15"], ["-", "-"], True),
        (["12", "05", "2023"], ["/", "/"], True),
        (["05", "12", "23"], [".", "."], True),
        (["13", "13", "2023"], ["/", "/"], False),  # no month 13 either way
        (["2024", "01", "15"], ["-", "/"], False),  # mixed separators
        (["415", "555", "2671"], ["-", "-"], False),
        (["20240115"], [], True),
        (["20241315"], [], False),
        (["12345678"], [], False),
    ],
)
def test_is_date(groups: list[str], seps: list[str], ok: bool) -> None:
    assert is_date(groups, seps) is ok

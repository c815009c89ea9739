"""Checksum and shape validators for the pattern tier.

Pure functions over short ASCII strings; no regexes are compiled per call and none
of them raise. They answer "could this be a real X?" once a cheap scan has found a
candidate, so they are where look-alikes get rejected: an invalid Luhn digit, an
SSN area the SSA never issues, an IBAN whose mod-97 check fails.
"""

from __future__ import annotations

__all__ = [
    "IBAN_LENGTHS",
    "ascii_digits",
    "card_brand",
    "iban_valid",
    "is_date",
    "luhn_valid",
    "ssn_valid",
]


def ascii_digits(s: str) -> str:
    """``s`` with every Unicode decimal digit ("４", "٤") replaced by its ASCII digit.

    ``str.isascii`` is O(1) in CPython, so ASCII input costs nothing.
    """
    if s.isascii():
        return s
    return "".join(str(int(c)) if c.isdecimal() else c for c in s)


# Luhn: the value contributed by a digit in a doubled position, by digit.
_DOUBLED = (0, 2, 4, 6, 8, 1, 3, 5, 7, 9)


def luhn_valid(digits: str) -> bool:
    """Luhn (mod 10) check over a string of decimal digits."""
    digits = ascii_digits(digits)
    total = 0
    double = False
    for ch in reversed(digits):
        d = ord(ch) - 48
        total += _DOUBLED[d] if double else d
        double = not double
    return total % 10 == 0


# (prefix range low, high, number of prefix digits, allowed lengths), per brand.
# Sources: the card networks' published IIN ranges (as summarised by ISO/IEC 7812
# tables); a number outside every range is not a payment card even if its Luhn
# digit happens to be right (one random digit string in ten passes Luhn).
_BRANDS: tuple[tuple[str, int, int, int, frozenset[int]], ...] = (
    ("visa", 4, 4, 1, frozenset({13, 16, 19})),
    ("mastercard", 51, 55, 2, frozenset({16})),
    ("mastercard", 2221, 2720, 4, frozenset({16})),
    ("amex", 34, 34, 2, frozenset({15})),
    ("amex", 37, 37, 2, frozenset({15})),
    ("discover", 6011, 6011, 4, frozenset(range(16, 20))),
    ("discover", 644, 649, 3, frozenset(range(16, 20))),
    ("discover", 65, 65, 2, frozenset(range(16, 20))),
    ("jcb", 3528, 3589, 4, frozenset(range(16, 20))),
    ("jcb", 2131, 2131, 4, frozenset({15, 16})),
    ("jcb", 1800, 1800, 4, frozenset({15, 16})),
    ("diners", 300, 305, 3, frozenset(range(14, 20))),
    ("diners", 3095, 3095, 4, frozenset(range(14, 20))),
    ("diners", 36, 36, 2, frozenset(range(14, 20))),
    ("diners", 38, 39, 2, frozenset(range(14, 20))),
    ("unionpay", 62, 62, 2, frozenset(range(16, 20))),
    ("mir", 2200, 2204, 4, frozenset(range(16, 20))),
    ("maestro", 50, 50, 2, frozenset(range(12, 20))),
    ("maestro", 56, 69, 2, frozenset(range(12, 20))),
)


def card_brand(digits: str) -> str | None:
    """The card network whose IIN range and length fit ``digits``, else ``None``.

    Does not check Luhn; call :func:`luhn_valid` as well.
    """
    n = len(digits)
    if n < 12 or n > 19:
        return None
    digits = ascii_digits(digits)
    head = int(digits[:4])
    prefix = (0, head // 1000, head // 100, head // 10, head)  # by prefix length
    for brand, lo, hi, k, lengths in _BRANDS:
        if n in lengths and lo <= prefix[k] <= hi:
            return brand
    return None


def ssn_valid(area: str, group: str, serial: str) -> bool:
    """Whether a US SSN's three parts could have been issued.

    Never issued: area 000, 666 and 900-999 (the 9xx block is ITINs), group 00,
    serial 0000; also numbers of one repeated digit and the well-known sample
    numbers (Woolworth's 078-05-1120, the 123-45-6789 placeholder, 219-09-9999).
    """
    area, group, serial = ascii_digits(area), ascii_digits(group), ascii_digits(serial)
    if area in ("000", "666") or area[0] == "9" or group == "00" or serial == "0000":
        return False
    whole = area + group + serial
    if whole.count(whole[0]) == 9:
        return False
    return whole not in ("078051120", "123456789", "219099999")


# IBAN length per country: SWIFT IBAN registry (release 2024). Countries that only
# "experimentally" use IBANs are left out: their numbers fail the length check.
IBAN_LENGTHS: dict[str, int] = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22,
    "BH": 22, "BI": 27, "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24,
    "DE": 22, "DJ": 27, "DK": 18, "DO": 28, "EE": 20, "EG": 29, "ES": 24, "FI": 18,
    "FK": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27,
    "GT": 28, "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26, "IT": 27,
    "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LC": 32, "LI": 21, "LT": 20, "LU": 20,
    "LV": 21, "LY": 25, "MC": 27, "MD": 24, "ME": 22, "MK": 19, "MN": 20, "MR": 27,
    "MT": 31, "MU": 30, "NI": 28, "NL": 18, "NO": 15, "OM": 23, "PK": 24, "PL": 28,
    "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "RU": 33, "SA": 24, "SC": 31,
    "SD": 18, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "SO": 23, "ST": 25, "SV": 28,
    "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20, "YE": 30,
}  # fmt: skip


def iban_valid(iban: str) -> bool:
    """Mod-97 check (ISO 13616) of a separator-free IBAN, any letter case.

    The caller has already cut ``iban`` to the country's registered length.
    """
    iban = ascii_digits(iban)
    if len(iban) < 15 or not iban.isascii() or not iban.isalnum():
        return False
    moved = (iban[4:] + iban[:4]).upper()
    # int(ch, 36) maps 0-9 to 0-9 and A-Z to 10-35, exactly the IBAN letter code.
    numeric = "".join(str(int(ch, 36)) for ch in moved)
    return int(numeric) % 97 == 1


def _day_month_ok(day: int, month: int) -> bool:
    return 1 <= month <= 12 and 1 <= day <= 31


def is_date(groups: list[str], seps: list[str]) -> bool:
    """Whether digit groups joined by ``seps`` read as a calendar date.

    ``groups`` are 1 or 3 digit strings. Three groups with one repeated separator
    from ``- / .`` read as Y-M-D, D-M-Y or M-D-Y; one group of eight digits reads
    as YYYYMMDD with a 19xx/20xx year. Used to keep dates out of phone numbers.
    """
    if len(groups) == 1:
        g = groups[0]
        if len(g) != 8 or g[:2] not in ("19", "20"):
            return False
        return _day_month_ok(int(g[6:]), int(g[4:6]))
    if len(groups) != 3 or seps[0] != seps[1] or seps[0] not in ("-", "/", "."):
        return False
    a, b, c = groups
    if len(a) == 4 and len(b) <= 2 and len(c) <= 2:  # Y-M-D
        return _day_month_ok(int(c), int(b))
    if len(a) <= 2 and len(b) <= 2 and len(c) in (2, 4):  # D-M-Y or M-D-Y
        x, y = int(a), int(b)
        return _day_month_ok(x, y) or _day_month_ok(y, x)
    return False

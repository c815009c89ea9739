"""The phone fast path agrees with python-phonenumbers' own matcher (differential test)."""

from __future__ import annotations

import random

import pytest
from phonenumbers import Leniency, PhoneNumberMatcher

from detectors.pii._phones import PhoneValidator

REGIONS = ["US", "GB", "DE", "FR", "IN", "CA", "BR", "IL"]
_CODES = ["1", "44", "49", "33", "91", "55", "972", "61", "81", "7", "86", "39", "34", "31", "03"]


def _candidates(count: int, seed: int) -> list[str]:
    rnd = random.Random(seed)

    def d(k: int) -> str:
        return "".join(rnd.choice("0123456789") for _ in range(k))

    shapes = [
        lambda: f"{d(3)}-{d(3)}-{d(4)}",
        lambda: f"({d(3)}) {d(3)}-{d(4)}",
        lambda: f"0{d(2)} {d(4)} {d(4)}",
        lambda: f"0{d(4)} {d(6)}",
        lambda: f"+{rnd.choice(_CODES)} {d(rnd.randint(6, 11))}",
        lambda: f"00{rnd.choice(_CODES)} {d(3)} {d(6)}",
        lambda: d(rnd.randint(7, 12)),
        lambda: f"0{d(1)} {d(2)} {d(2)} {d(2)} {d(2)}",
        lambda: f"{d(5)} {d(5)}",
        lambda: f"+44 (0){d(2)} {d(4)} {d(4)}",
        lambda: f"({d(2)}) {d(5)}-{d(4)}",
        lambda: f"{d(3)}.{d(3)}.{d(4)}",
        lambda: f"1-{d(3)}-{d(3)}-{d(4)}",
        lambda: f"011 {rnd.choice(_CODES)} {d(8)}",
        lambda: f"01{d(1)} {d(3)} {d(6)}",
        lambda: f"{rnd.choice(['44', '49', '91', '972'])}{d(9)}",
        lambda: f"{d(3)}-{d(3)}-{d(4)}x{d(3)}",
    ]
    return [rnd.choice(shapes)() for _ in range(count)]


FIXED = [
    "415-555-2671", "+44 20 7946 0958", "020 7946 0958", "030 901820", "01 42 68 53 00",
    "06.12.20.45.78", "98765 43210", "(11) 98765-4321", "+49 30 901820", "0049 30 901820",
    "441-818-8918", "49908 12542", "(49) 81752-3318", "01999 112350", "+03 627 140 509",
    "666-12-3456", "1700000000", "+447700 921 916", "345-899-3560x4587", "001-518-640-0854",
]  # fmt: skip


def _reference(candidate: str) -> bool:
    """What presidio's PhoneRecognizer would say: a VALID match spanning the candidate."""
    return any(
        m.start == 0 and m.end == len(candidate)
        for region in REGIONS
        for m in PhoneNumberMatcher(candidate, region, Leniency.VALID)
    )


@pytest.fixture(scope="module")
def validator() -> PhoneValidator:
    return PhoneValidator(REGIONS, "valid")


def test_fast_path_agrees_with_phonenumbers_matcher(validator: PhoneValidator) -> None:
    candidates = FIXED + _candidates(800, seed=20240601)
    disagreements = [
        (c, validator.check(c)) for c in candidates if validator.check(c) != _reference(c)
    ]
    assert disagreements == []
    accepted = sum(validator.check(c) for c in candidates)
    assert 0.2 * len(candidates) < accepted < 0.9 * len(candidates)  # both kinds exercised


@pytest.mark.parametrize("leniency", ["possible", "strict_grouping"])
def test_slow_leniencies_use_phonenumbers_itself(leniency: str) -> None:
    validator = PhoneValidator(["US"], leniency)  # type: ignore[arg-type]
    for candidate in ["415-555-2671", "211-555-0123", "41-5555-2671", "123"]:
        expected = any(
            m.start == 0 and m.end == len(candidate)
            for m in PhoneNumberMatcher(candidate, "US", getattr(Leniency, leniency.upper()))
        )
        assert validator.check(candidate) is expected, candidate


def test_unknown_region_is_rejected() -> None:
    with pytest.raises(ValueError, match="no phone metadata"):
        PhoneValidator(["XX"])

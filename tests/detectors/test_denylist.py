"""DenylistDetector: keywords (trie), patterns, labels, whole words, case."""

from __future__ import annotations

import random
import re
import string
from typing import Any

import pytest

from detectors.denylist import DenylistDetector, _trie_source


def scan(text: str, **options: Any) -> list[tuple[str, str, dict]]:
    """(label, matched text, metadata) per finding; the matched text is for the test only."""
    detector = DenylistDetector(DenylistDetector.Options(**options))
    (findings,) = detector.detect_sync([text])
    assert all(f.detector == "denylist" and f.score == 1.0 for f in findings)
    assert [f.start for f in findings] == sorted(f.start for f in findings)
    return [(f.label, text[f.start : f.end], dict(f.metadata)) for f in findings]


CODENAMES = ["Project Falcon", "falcon", "bluebird", "c++", ".net", "état"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("nothing to see", []),
        ("Ask about BLUEBIRD today", [("denylist", "BLUEBIRD", {"rule": "keywords[2]"})]),
        # longest keyword wins at a position
        (
            "Status of project falcon?",
            [("denylist", "project falcon", {"rule": "keywords[0]"})],
        ),
        ("the falcon flew", [("denylist", "falcon", {"rule": "keywords[1]"})]),
        # whole words only: look-alikes inside words do not match
        ("falconry and bluebirds and Falcon9", []),
        (
            "uses c++ and .net daily",
            [
                ("denylist", "c++", {"rule": "keywords[3]"}),
                ("denylist", ".net", {"rule": "keywords[4]"}),
            ],
        ),
        ("c++11 and asp.net", []),
        ("L'ÉTAT, c'est moi", [("denylist", "ÉTAT", {"rule": "keywords[5]"})]),
        (
            "falcon, bluebird; falcon.",
            [
                ("denylist", "falcon", {"rule": "keywords[1]"}),
                ("denylist", "bluebird", {"rule": "keywords[2]"}),
                ("denylist", "falcon", {"rule": "keywords[1]"}),
            ],
        ),
    ],
)
def test_keywords(text: str, expected: list) -> None:
    assert scan(text, keywords=CODENAMES) == expected


@pytest.mark.parametrize(
    ("options", "text", "expected"),
    [
        # substring matching
        ({"keywords": ["falcon"], "whole_word": False}, "falconry", [("denylist", "falcon")]),
        # case-sensitive
        ({"keywords": ["ACME"], "case_sensitive": True}, "acme and ACME", [("denylist", "ACME")]),
        # per-keyword overrides and labels
        (
            {
                "keywords": [
                    {"keyword": "falcon", "label": "CODENAME", "id": "falcon"},
                    {"keyword": "kill", "whole_word": False, "label": "VIOLENCE"},
                    {"keyword": "NDA", "case_sensitive": True},
                ]
            },
            "Falcon overkill: the NDA, not the nda",
            [("CODENAME", "Falcon"), ("VIOLENCE", "kill"), ("denylist", "NDA")],
        ),
        ({"keywords": ["x"], "label": "BANNED"}, "x marks", [("BANNED", "x")]),
        # a text whose lower-case form is longer (U+0130) keeps correct offsets
        ({"keywords": ["falcon"]}, "İİ falcon İ", [("denylist", "falcon")]),
    ],
)
def test_keyword_options(options: dict, text: str, expected: list) -> None:
    assert [(label, matched) for label, matched, _ in scan(text, **options)] == expected


@pytest.mark.parametrize(
    ("patterns", "text", "expected"),
    [
        (
            [r"\bTICKET-\d{4}\b"],
            "see ticket-1234 and TICKET-99",
            [("denylist", "ticket-1234", {"rule": "patterns[0]"})],
        ),
        (
            [
                {
                    "pattern": r"\bTICKET-\d{4}\b",
                    "case_sensitive": True,
                    "label": "TICKET",
                    "id": "t",
                }
            ],
            "ticket-1234 TICKET-5678",
            [("TICKET", "TICKET-5678", {"rule": "t"})],
        ),
        (
            [r"\d{3}-\d{4}", {"pattern": r"secret\w*", "label": "WORD"}],
            "555-1234 Secretly",
            [
                ("denylist", "555-1234", {"rule": "patterns[0]"}),
                ("WORD", "Secretly", {"rule": "patterns[1]"}),
            ],
        ),
    ],
)
def test_patterns(patterns: list, text: str, expected: list) -> None:
    assert scan(text, patterns=patterns) == expected


def test_keywords_and_patterns_together_sorted() -> None:
    found = scan("ref 12345 mentions falcon", keywords=["falcon"], patterns=[r"\d{5}"])
    assert [m for _, m, _ in found] == ["12345", "falcon"]


def test_metadata_never_holds_the_matched_text() -> None:
    found = scan("FALCON", keywords=["falcon"], patterns=["falc"])
    for _, matched, metadata in found:
        assert matched.lower() not in str(metadata).lower()


def test_max_findings() -> None:
    assert len(scan("spam " * 500, keywords=["spam"], max_findings=7)) == 7


def test_no_rules_no_findings() -> None:
    assert scan("anything at all") == []


async def test_async_detect_and_start() -> None:
    detector = DenylistDetector(DenylistDetector.Options(keywords=["falcon"]), name="codenames")
    assert detector.state()["started"] is False
    await detector.start()
    assert detector.state() == {"started": True, "keywords": 1, "patterns": 0}
    (found, none) = await detector.detect(["a falcon", "a hawk"])
    assert [(f.detector, f.label) for f in found] == [("codenames", "denylist")]
    assert none == []
    await detector.close()


def test_many_keywords_match_like_a_plain_alternation() -> None:
    # The trie must find exactly what the simple (slow) alternation finds.
    rng = random.Random(7)
    words = {"".join(rng.choices(string.ascii_lowercase, k=rng.randint(2, 7))) for _ in range(3000)}
    words |= {"ab", "abc", "abcd", "a-b", "a.b"}
    text = " ".join(rng.choice(sorted(words)) + rng.choice(["", "x", "s"]) for _ in range(400))
    text += " AbCd a-b a.b"
    ordered = sorted(words, key=len, reverse=True)
    plain = re.compile(
        r"(?<!\w)(?:" + "|".join(map(re.escape, ordered)) + r")(?!\w)", re.IGNORECASE
    )
    expected = [m.span() for m in plain.finditer(text)]
    detector = DenylistDetector(
        DenylistDetector.Options(keywords=sorted(words), max_findings=10**6)
    )
    (found,) = detector.detect_sync([text])
    assert [(f.start, f.end) for f in found] == expected
    assert len(expected) > 100


@pytest.mark.parametrize(
    ("words", "source"),
    [
        (["ab", "abc"], "ab(?:c)?"),
        (["foo", "foobar", "fob"], "fo(?:b|o(?:bar)?)"),
        (["a+", "a"], r"a(?:\+)?"),
    ],
)
def test_trie_source(words: list[str], source: str) -> None:
    assert _trie_source(words) == source

"""Exact spans and look-alikes (issue 13): every case is a row, positive or negative.

Masking replaces exactly the reported span, so a span one character too long eats
text that is not PII (a quote, ``ADMIN_EMAIL=``, a ``/64``, the next list item)
and one too short leaks it. Rows give the text and every pattern span expected in
it, in order; an empty list means nothing may be reported at all.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from detectors.pii import PiiDetector
from detectors.pii.scanner import PATTERN_ENTITIES

CASES_FILE = Path(__file__).resolve().parents[3] / "bench" / "data" / "pii_cases.jsonl"

E, IP, PH, CC = "EMAIL_ADDRESS", "IP_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD"

SPANS: list[tuple[str, list[tuple[str, str]]]] = [
    # e-mail: no leading quote, backtick, assignment prefix or CJK text
    ("Send it to 'ops@example.com' please.", [(E, "ops@example.com")]),
    ('"reply_to": "noreply@service.io",', [(E, "noreply@service.io")]),
    ("Set `admin@corp.io` as the owner.", [(E, "admin@corp.io")]),
    ("ADMIN_EMAIL=admin@corp.io", [(E, "admin@corp.io")]),
    ("export SUPPORT_EMAIL=help.desk@acme-mail.com && ./run.sh", [(E, "help.desk@acme-mail.com")]),
    ("the flag --email=jane_doe@example.org was passed", [(E, "jane_doe@example.org")]),
    ("path users/bob@example.net/inbox", [(E, "bob@example.net")]),
    ("{alice@example.com}", [(E, "alice@example.com")]),
    ("请联系john.smith@example.com谢谢", [(E, "john.smith@example.com")]),
    ("メールはtanaka@example.co.jpまで送ってください", [(E, "tanaka@example.co.jp")]),
    ("邮箱是li.wei@example.cn，谢谢", [(E, "li.wei@example.cn")]),
    ("이메일kim@example.kr로 보내주세요", [(E, "kim@example.kr")]),
    # ... while what belongs to an address stays in it
    ("Write to o'brien@example.ie for the keys.", [(E, "o'brien@example.ie")]),
    ("a+tag@sub.example.co.uk.", [(E, "a+tag@sub.example.co.uk")]),
    ("Jörg schrieb: jörg.müller@beispiel.de", [(E, "jörg.müller@beispiel.de")]),
    ("邮件 用户@例子.中国 好", [(E, "用户@例子.中国")]),
    # IP: the address without its prefix length, which is no PII
    ("allow 10.0.0.1/32 only", [(IP, "10.0.0.1")]),
    ("route 2001:db8::1/64 via eth0", [(IP, "2001:db8::1")]),
    (
        "block 203.0.113.7/32 and 198.51.100.0/24 at the edge",
        [(IP, "203.0.113.7"), (IP, "198.51.100.0")],
    ),
    ("prefix 2001:db8:abcd:12::/64 is assigned", [(IP, "2001:db8:abcd:12::")]),
    ("the host fe80::1ff:fe23:4567:890a/64 answered", [(IP, "fe80::1ff:fe23:4567:890a")]),
    ("10.0.0.1/32 555 1234", [(IP, "10.0.0.1")]),  # nothing read out of the prefix
    # phones in lists: each keeps its +CC and stops before the next item
    ("Phones: +44 20 7946 0958 (415) 555-2671", [(PH, "+44 20 7946 0958"), (PH, "(415) 555-2671")]),
    ("1. +49 30 901820 2. (030) 901821", [(PH, "+49 30 901820"), (PH, "(030) 901821")]),
    (
        "Call +1 (650) 253-0000 (415) 555-2671 or email me.",
        [(PH, "+1 (650) 253-0000"), (PH, "(415) 555-2671")],
    ),
    (
        "Numbers: +1 202 555 0143 (202) 555 0178",
        [(PH, "+1 202 555 0143"), (PH, "(202) 555 0178")],
    ),
    (
        "Office +91 98765 43210 (home) (080) 2345 6789",
        [(PH, "+91 98765 43210"), (PH, "(080) 2345 6789")],
    ),
    ("Sydney +61 2 9374 4000 (02) 9374 4001", [(PH, "+61 2 9374 4000"), (PH, "(02) 9374 4001")]),
    (
        "Team:\n- +33 1 42 68 53 00\n- +44 20 7946 0958",
        [(PH, "+33 1 42 68 53 00"), (PH, "+44 20 7946 0958")],
    ),
    (
        "Contacts: +1 415-555-2671; +44 7911 123456; +49 30 901820.",
        [(PH, "+1 415-555-2671"), (PH, "+44 7911 123456"), (PH, "+49 30 901820")],
    ),
    ("+44 (0)20 7946 0958 is the desk", [(PH, "+44 (0)20 7946 0958")]),
    ("Le numéro est le 06 12 34 56 78.", [(PH, "06 12 34 56 78")]),
    # phones with context: bare digits, and numbers no default region validates
    ("Fax: 4155552671", [(PH, "4155552671")]),
    ("call me at 4155552671 tonight", [(PH, "4155552671")]),
    ("Phone: 358 0594", [(PH, "358 0594")]),
    ("Mobile: 72 128 827", [(PH, "72 128 827")]),
    ("3660170548-Fax", [(PH, "3660170548")]),
    ("Desk: +41 (0)85 806 98 67", [(PH, "+41 (0)85 806 98 67")]),
    # cards outside the networks' ranges count after a card word
    ("credit card 060426070011 declined", [(CC, "060426070011")]),
    ("my card 3521213764418045.", [(CC, "3521213764418045")]),
]

LOOKALIKES: list[str] = [
    # dotted versions and OIDs
    "Upgrade to 10.0.19045.2965 tonight.",
    "Python 2.7.18.1234567 was a custom build.",
    "kernel 5.15.0.1051 crashed on boot",
    "Chrome 120.0.6099.109 fixed the leak.",
    "The Windows build 10.0.22631.3007 ships next week.",
    "release 4.18.0.513 is current",
    "OID 1.3.6.1.4.1.343 is Intel's enterprise arc.",
    "The arc 2.16.840.1.113730.3.1 names a Netscape attribute.",
    "snmpget returns sysDescr for 1.3.6.1.2.1.1.1.0 on every switch",
    "1.2.840.113549.1.1.11 is sha256WithRSAEncryption.",
    # ABA routing numbers
    "Use routing number 021000021 for wires.",
    "ABA 011000015, then the account.",
    "Our bank's routing number is 121000358.",
    "The transfer needs RTN 026009593 and a memo.",
    # bare 8- and 10-digit numbers without phone context
    "We processed 4155552671 events last month.",
    "There were 31415926 rows in the table.",
    "Checksum 2718281828 matched the manifest.",
    "I counted 12345678 votes in total.",
    "Downloads reached 8005551234 this year.",
    "The upload was 3126549870 bytes.",
    "Random seed 42424242 reproduces the run.",
    # context words that must not vouch for what they do not precede
    "Call the service after 17031 2202 Rissik St is open.",
    "batch 060426070011 declined",  # Luhn-valid, no card range, no card word
    "The hotel has 12345678 reviews.",  # "hotel" is no "tel"
    "I recall 98765432 rows.",  # "recall" is no "call"
]


def spans(detector: PiiDetector, text: str) -> list[tuple[str, str]]:
    return [(f.label, text[f.start : f.end]) for f in detector.detect_sync([text])[0]]


@pytest.mark.parametrize(("text", "expected"), SPANS, ids=[t[:40] for t, _ in SPANS])
def test_exact_spans(patterns: PiiDetector, text: str, expected: list[tuple[str, str]]) -> None:
    assert spans(patterns, text) == expected


@pytest.mark.parametrize("text", LOOKALIKES, ids=[t[:40] for t in LOOKALIKES])
def test_lookalikes_are_not_reported(patterns: PiiDetector, text: str) -> None:
    assert spans(patterns, text) == []


def _labelled_cases() -> list[tuple[int, str, list[tuple[str, int, int]]]]:
    out = []
    for line in CASES_FILE.read_text(encoding="utf-8").splitlines():
        if line.strip():
            row = json.loads(line)
            gold = [
                (s["label"], s["start"], s["end"])
                for s in row["spans"]
                if s["label"] in PATTERN_ENTITIES
            ]
            out.append((row["id"], row["text"], gold))
    return out


@pytest.mark.parametrize(("case_id", "text", "gold"), _labelled_cases(), ids=lambda v: str(v)[:30])
def test_labelled_cases_have_exact_pattern_spans(
    patterns: PiiDetector, case_id: int, text: str, gold: list[tuple[str, int, int]]
) -> None:
    """bench/data/pii_cases.jsonl, the file pii_quality.py scores: every pattern span exact."""
    found = [(f.label, f.start, f.end) for f in patterns.detect_sync([text])[0]]
    assert sorted(found) == sorted(gold)


def test_context_fallback_follows_the_configured_regions() -> None:
    """A number phonenumbers rejects counts with context only if some configured
    region dials numbers of its length; the grouping leniencies never relax."""
    us = PiiDetector(PiiDetector.Options(entities=["PHONE_NUMBER"], phone_regions=["US"]))
    us.start_sync()
    assert spans(us, "Phone: 358 0594") == [(PH, "358 0594")]  # US local: 7 digits
    assert spans(us, "Phone: 72 128 827") == []  # no 8-digit US numbers
    strict = PiiDetector(
        PiiDetector.Options(entities=["PHONE_NUMBER"], phone_leniency="strict_grouping")
    )
    strict.start_sync()
    assert spans(strict, "Phone: 358 0594") == []


def test_unvalidated_phones_score_lower_and_say_so(patterns: PiiDetector) -> None:
    (valid,) = patterns.detect_sync(["call (415) 555-2671"])[0]
    (guess,) = patterns.detect_sync(["Phone: 358 0594"])[0]
    assert (valid.score, valid.metadata["validated"]) == (0.8, True)
    assert (guess.score, guess.metadata["validated"]) == (0.6, False)

"""Pattern tier: positives, negatives and look-alikes per entity, with exact offsets."""

from __future__ import annotations

import pytest

from detectors.pii import PiiDetector


def found(detector: PiiDetector, text: str) -> list[tuple[str, str]]:
    return [(f.label, text[f.start : f.end]) for f in detector.detect_sync([text])[0]]


POSITIVES = [
    # e-mail
    ("contact john.doe@example.com today", "EMAIL_ADDRESS", "john.doe@example.com"),
    ("a+tag@sub.example.co.uk.", "EMAIL_ADDRESS", "a+tag@sub.example.co.uk"),
    ("(mailto:first_last@company.io)", "EMAIL_ADDRESS", "first_last@company.io"),
    ("Jörg schrieb: jörg.müller@beispiel.de", "EMAIL_ADDRESS", "jörg.müller@beispiel.de"),
    ("MAIL:UtaKortig@jourrapide.com,thanks", "EMAIL_ADDRESS", "UtaKortig@jourrapide.com"),
    ("ends with a sentence john@example.com.Then more", "EMAIL_ADDRESS", "john@example.com"),
    # phone: national formats of the default regions
    ("call (415) 555-2671 now", "PHONE_NUMBER", "(415) 555-2671"),
    ("call 415-555-2671.", "PHONE_NUMBER", "415-555-2671"),
    ("call 650.253.0000 now", "PHONE_NUMBER", "650.253.0000"),
    ("office 345-899-3560x4587", "PHONE_NUMBER", "345-899-3560x4587"),
    ("London 020 7946 0958", "PHONE_NUMBER", "020 7946 0958"),
    ("mobile 07911 123456", "PHONE_NUMBER", "07911 123456"),
    ("Berlin 030 901820", "PHONE_NUMBER", "030 901820"),
    ("Paris 01 42 68 53 00", "PHONE_NUMBER", "01 42 68 53 00"),
    ("Fax 06.12.20.45.78", "PHONE_NUMBER", "06.12.20.45.78"),
    ("India 98765 43210", "PHONE_NUMBER", "98765 43210"),
    ("ligue (11) 98765-4321", "PHONE_NUMBER", "(11) 98765-4321"),
    # phone: international
    ("UK +44 20 7946 0958", "PHONE_NUMBER", "+44 20 7946 0958"),
    ("DE +49 30 901820", "PHONE_NUMBER", "+49 30 901820"),
    ("FR +33 1 42 68 53 00", "PHONE_NUMBER", "+33 1 42 68 53 00"),
    ("IN +91 98765 43210", "PHONE_NUMBER", "+91 98765 43210"),
    ("AU +61 2 9374 4000", "PHONE_NUMBER", "+61 2 9374 4000"),
    ("JP +81 3-1234-5678", "PHONE_NUMBER", "+81 3-1234-5678"),
    ("IL +972 3-123-4567", "PHONE_NUMBER", "+972 3-123-4567"),
    ("US +1 (650) 253-0000", "PHONE_NUMBER", "+1 (650) 253-0000"),
    ("dial 0049 30 901820", "PHONE_NUMBER", "0049 30 901820"),
    ("+1-415-555-2671 ext. 12 is me", "PHONE_NUMBER", "+1-415-555-2671 ext. 12"),
    # credit cards (Luhn + IIN range)
    ("card 4111 1111 1111 1111", "CREDIT_CARD", "4111 1111 1111 1111"),
    ("card 4111-1111-1111-1111.", "CREDIT_CARD", "4111-1111-1111-1111"),
    ("card 4111111111111111", "CREDIT_CARD", "4111111111111111"),
    ("mc 5500 0000 0000 0004", "CREDIT_CARD", "5500 0000 0000 0004"),
    ("mc 2223000048400011", "CREDIT_CARD", "2223000048400011"),
    ("amex 3782 822463 10005", "CREDIT_CARD", "3782 822463 10005"),
    ("discover 6011111111111117", "CREDIT_CARD", "6011111111111117"),
    ("jcb 3530111333300000", "CREDIT_CARD", "3530111333300000"),
    ("diners 30569309025904", "CREDIT_CARD", "30569309025904"),
    ("visa19 4131034282458809939", "CREDIT_CARD", "4131034282458809939"),
    # outside the networks' ranges, Luhn-valid, after a card word
    ("credit card 060426070011 declined", "CREDIT_CARD", "060426070011"),
    ("my card 3521213764418045.", "CREDIT_CARD", "3521213764418045"),
    ("cc 3509 4131 9965 4323 on file", "CREDIT_CARD", "3509 4131 9965 4323"),
    # US SSN
    ("SSN 536-22-8726", "US_SSN", "536-22-8726"),
    ("id 536 22 8726 on file", "US_SSN", "536 22 8726"),
    ("my social security number is 536228726", "US_SSN", "536228726"),
    ("areas 7xx/8xx are issued: 853-37-1694", "US_SSN", "853-37-1694"),
    # IBAN (mod-97 + registered length)
    ("IBAN DE89 3704 0044 0532 0130 00 thanks", "IBAN_CODE", "DE89 3704 0044 0532 0130 00"),
    ("IBAN DE89370400440532013000 2 days", "IBAN_CODE", "DE89370400440532013000"),
    ("GB82 WEST 1234 5698 7654 32", "IBAN_CODE", "GB82 WEST 1234 5698 7654 32"),
    ("lower gb82west12345698765432", "IBAN_CODE", "gb82west12345698765432"),
    ("FR14 2004 1010 0505 0001 3M02 606", "IBAN_CODE", "FR14 2004 1010 0505 0001 3M02 606"),
    ("NL91ABNA0417164300.", "IBAN_CODE", "NL91ABNA0417164300"),
    ("IBAN: ES9121000418450200051332 please", "IBAN_CODE", "ES9121000418450200051332"),
    # IP v4
    ("host 192.168.1.1 is down", "IP_ADDRESS", "192.168.1.1"),
    ("route 10.0.0.0/8 via", "IP_ADDRESS", "10.0.0.0"),  # the prefix length is no PII
    ("dns is 8.8.8.8.", "IP_ADDRESS", "8.8.8.8"),
    # IP v6: full, compressed, loopback, zone, embedded v4, prefix, bracketed
    (
        "v6 2001:0db8:85a3:0000:0000:8a2e:0370:7334.",
        "IP_ADDRESS",
        "2001:0db8:85a3:0000:0000:8a2e:0370:7334",
    ),
    ("v6 2001:db8::1, ok", "IP_ADDRESS", "2001:db8::1"),
    ("loopback ::1 here", "IP_ADDRESS", "::1"),
    ("link-local fe80::1%eth0 up", "IP_ADDRESS", "fe80::1%eth0"),
    ("mapped ::ffff:192.168.1.1 seen", "IP_ADDRESS", "::ffff:192.168.1.1"),
    ("net 2001:db8::/32 routed", "IP_ADDRESS", "2001:db8::"),
    ("addr:fe80::1 is set", "IP_ADDRESS", "fe80::1"),
    # URL with and without scheme
    ("see https://example.com/path?q=1&x=2.", "URL", "https://example.com/path?q=1&x=2"),
    ("(https://en.wikipedia.org/wiki/Foo_(bar))", "URL", "https://en.wikipedia.org/wiki/Foo_(bar)"),
    ("dev at http://localhost:8080/x now", "URL", "http://localhost:8080/x"),
    ("ftp://files.example.net/pub/a.tgz", "URL", "ftp://files.example.net/pub/a.tgz"),
    (
        "db postgres://admin:pw@db.example.com:5432/app",
        "URL",
        "postgres://admin:pw@db.example.com:5432/app",
    ),
    ("visit www.example.org today", "URL", "www.example.org"),
    ("go to example.com, then", "URL", "example.com"),
    ("docs.python.org/3/library/re.html is good", "URL", "docs.python.org/3/library/re.html"),
    ("news at bbc.co.uk!", "URL", "bbc.co.uk"),
    ("site https://www.ScrapbookInsider.com.pt/ ok", "URL", "https://www.ScrapbookInsider.com.pt/"),
]


@pytest.mark.parametrize(("text", "label", "value"), POSITIVES)
def test_positive_with_exact_offsets(
    patterns: PiiDetector, text: str, label: str, value: str
) -> None:
    findings = patterns.detect_sync([text])[0]
    hits = [f for f in findings if f.label == label]
    assert [(text[f.start : f.end]) for f in hits] == [value]
    assert hits[0].start == text.index(value)
    assert hits[0].end == text.index(value) + len(value)
    assert 0.0 < hits[0].score <= 1.0


NEGATIVES = [
    # e-mail look-alikes
    ("retina asset icon@2x.png", "EMAIL_ADDRESS"),
    ("ping @username on chat", "EMAIL_ADDRESS"),
    ("user@localhost has no domain", "EMAIL_ADDRESS"),
    ("foo@bar.notarealtld", "EMAIL_ADDRESS"),
    # phone look-alikes: versions, order numbers, dates, invalid cards, SSN shapes
    ("Order #123456789 shipped", "*"),
    ("order number 4155552671 shipped", "*"),
    ("invoice no. 4155552671", "*"),
    # Luhn-valid but outside every card range, and no card word before it
    ("batch 060426070011 declined", "*"),
    ("due 2024-01-15", "*"),
    ("due 12/05/2023 or 05.12.2023", "*"),
    ("built 20240115", "*"),
    ("invoice 20240115-0042", "*"),
    ("ISBN 978-3-16-148410-0", "PHONE_NUMBER"),
    ("pi is 3.14159265358979", "*"),
    ("total $1,234,567.89", "*"),
    ("uuid 550e8400-e29b-41d4-a716-446655440000", "*"),
    ("hash d41d8cd98f00b204e9800998ecf8427e", "*"),
    ("meet at 10:30 or 10:30:45", "*"),
    ("zip 94105", "*"),
    ("years 1999-2024", "*"),
    ("unix time 1700000000 or 1700000000000 ms", "*"),
    ("7-digit local 467 3395", "PHONE_NUMBER"),
    # credit card look-alikes
    ("invalid luhn 4111 1111 1111 1112", "*"),
    ("16 digits 1234567812345678", "*"),
    ("zeros 0000 0000 0000 0000", "*"),
    ("no network 9999999999999995", "CREDIT_CARD"),
    # SSN: areas/groups/serials never issued, samples, bare digits without context
    ("000-12-3456", "*"),
    ("666-12-3456", "*"),
    ("900-12-3456", "*"),
    ("999-12-3456", "*"),
    ("536-00-8726", "*"),
    ("536-22-0000", "*"),
    ("123-45-6789", "*"),
    ("078-05-1120", "*"),
    ("111-11-1111", "*"),
    ("reference 536228726", "US_SSN"),
    # IBAN look-alikes
    ("DE89 3704 0044 0532 0130 01 has a bad checksum", "*"),
    ("GB82WEST1234569876543", "IBAN_CODE"),
    ("XX89370400440532013000", "IBAN_CODE"),
    ("ABCD12345678", "IBAN_CODE"),
    # IP look-alikes
    ("version 1.2.3.4", "*"),
    ("Version: 10.0.19041.1", "*"),
    ("v1.2.3.4 released", "*"),
    ("see section 1.2.3.4", "*"),
    ("dotted 1.2.3.4.5", "*"),
    ("not ip 256.1.1.1", "IP_ADDRESS"),
    ("octal-ish 01.02.03.04", "IP_ADDRESS"),
    ("std::vector<int> and Foo::Bar", "*"),
    ("mac 12:34:56:78:9a:bc", "*"),
    # URL look-alikes
    ("run setup.py and README.md", "*"),
    ("call logger.info(msg)", "*"),
    ("set self.name and user.email", "*"),
    ("e.g. this, i.e. that", "*"),
    ("ASP.NET and VB.NET", "*"),
    ("value 3.14.", "*"),
    ("path src/main.rs", "*"),
]


@pytest.mark.parametrize(("text", "label"), NEGATIVES)
def test_negative_and_lookalikes(patterns: PiiDetector, text: str, label: str) -> None:
    hits = found(patterns, text)
    if label == "*":
        assert hits == []
    else:
        assert [h for h in hits if h[0] == label] == []


def test_unicode_before_entity_uses_character_offsets(patterns: PiiDetector) -> None:
    # astral-plane emoji are one character in Python (two UTF-16 units, four bytes)
    text = "Ünïcödé — 你好 🙂🙂 mail: a.b@example.com, tel +44 20 7946 0958"
    findings = patterns.detect_sync([text])[0]
    by_label = {f.label: f for f in findings}
    email = by_label["EMAIL_ADDRESS"]
    assert (email.start, email.end) == (22, 37)  # UTF-16 units: 24, UTF-8 bytes: 38
    assert text[email.start : email.end] == "a.b@example.com"
    phone = by_label["PHONE_NUMBER"]
    assert text[phone.start : phone.end] == "+44 20 7946 0958"


@pytest.mark.parametrize(
    ("text", "label", "value"),
    [
        (
            "カード ４１１１ １１１１ １１１１ １１１１ です",
            "CREDIT_CARD",
            "４１１１ １１１１ １１１１ １１１１",
        ),
        ("電話 +４４ ２０ ７９４６ ０９５８ まで", "PHONE_NUMBER", "+４４ ２０ ７９４６ ０９５８"),
        ("SSN ５３６-２２-８７２６", "US_SSN", "５３６-２２-８７２６"),
        ("٤١١١١١١١١١١١١١١١ (Arabic-Indic digits)", "CREDIT_CARD", "٤١١١١١١١١١١١١١١١"),
    ],
)
def test_non_ascii_digits(patterns: PiiDetector, text: str, label: str, value: str) -> None:
    # phonenumbers and the validators read every script's decimal digits
    assert found(patterns, text) == [(label, value)]


def test_non_ascii_lookalikes_still_rejected(patterns: PiiDetector) -> None:
    assert (
        found(patterns, "カード ４１１１ １１１１ １１１１ １１１２, SSN ６６６-１２-３４５６")
        == []
    )


def test_several_entities_in_one_text_sorted(patterns: PiiDetector) -> None:
    text = (
        "Mail a@example.com, call +1 650-253-0000, pay 4111 1111 1111 1111 or "
        "DE89370400440532013000; SSN 536-22-8726; host 10.1.2.3; https://x.example.org/a"
    )
    got = found(patterns, text)
    assert got == [
        ("EMAIL_ADDRESS", "a@example.com"),
        ("PHONE_NUMBER", "+1 650-253-0000"),
        ("CREDIT_CARD", "4111 1111 1111 1111"),
        ("IBAN_CODE", "DE89370400440532013000"),
        ("US_SSN", "536-22-8726"),
        ("IP_ADDRESS", "10.1.2.3"),
        ("URL", "https://x.example.org/a"),
    ]


def test_nothing_inside_urls_or_emails_is_reported_twice(patterns: PiiDetector) -> None:
    text = "http://192.168.1.1:8080/order/4155552671 and 4155552671@example.com"
    assert found(patterns, text) == [
        ("URL", "http://192.168.1.1:8080/order/4155552671"),
        ("EMAIL_ADDRESS", "4155552671@example.com"),
    ]


def test_two_phones_in_one_run_are_split(patterns: PiiDetector) -> None:
    text = "call 415-555-2671 2 times"
    assert found(patterns, text) == [("PHONE_NUMBER", "415-555-2671")]


@pytest.mark.parametrize(
    ("text", "score"),
    [
        ("card 4111111111111111", 1.0),  # Luhn + major network
        ("maestro 6304000000000000", 0.85),  # Luhn + other network
        ("SSN 536-22-8726", 0.95),  # dashes + context word
        ("id 536-22-8726", 0.85),  # dashes only
        ("num 415-555-2671", 0.7),  # national format
        ("num +1 415-555-2671", 0.85),  # international
        ("phone: +1 415-555-2671", 0.95),  # international + context
    ],
)
def test_scores_follow_the_documented_table(patterns: PiiDetector, text: str, score: float) -> None:
    (finding,) = patterns.detect_sync([text])[0]
    assert finding.score == pytest.approx(score)

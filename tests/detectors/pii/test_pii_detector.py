"""The detector contract: options, lifecycle, batching, metadata, errors, offline presidio."""

from __future__ import annotations

import json
import socket
from typing import Any

import pydantic
import pytest

from detectors.base import Detector, TextContext
from detectors.errors import DetectorStartError, DetectorUnavailableError
from detectors.pii import PATTERN_ENTITIES, PiiDetector

MIXED = [
    "mail a@example.com",
    "",
    "nothing here at all",
    "card 4111 1111 1111 1111 and +44 20 7946 0958",
    "version 1.2.3.4 and 2001:db8::1",
]


def test_protocol_and_defaults() -> None:
    det = PiiDetector()
    assert isinstance(det, Detector)
    assert det.name == "pii"
    assert det.blocking is False
    assert PiiDetector(name="pii_in").name == "pii_in"
    assert PiiDetector.name == "pii"  # the override is per instance
    assert det.options.entities == list(PATTERN_ENTITIES)
    assert det.state()["loaded"] is False
    assert PiiDetector(PiiDetector.Options(ner=True)).blocking is True
    assert PiiDetector(PiiDetector.Options(backend="presidio")).blocking is True


@pytest.mark.parametrize(
    "raw",
    [
        {"entitys": ["URL"]},  # typo: extra keys are forbidden
        {"entities": ["PERSON"]},  # NER label in the pattern list
        {"entities": ["NOT_AN_ENTITY"]},
        {"entities": ["URL", "url"]},  # repeated after normalisation
        {"entities": []},  # nothing to detect
        {"ner": True, "ner_entities": []},
        {"ner_entities": ["GPE"]},  # spaCy's label, not presidio's
        {"phone_regions": ["XX"]},
        {"phone_regions": []},
        {"phone_leniency": "loose"},
        {"backend": "spacy"},
        {"ner_batch_size": 0},
    ],
)
def test_bad_options_are_rejected(raw: dict[str, Any]) -> None:
    with pytest.raises(pydantic.ValidationError):
        PiiDetector.Options.model_validate(raw)


def test_options_normalise_case() -> None:
    opts = PiiDetector.Options.model_validate(
        {"entities": ["url", " Email_Address"], "phone_regions": ["gb"]}
    )
    assert opts.entities == ["URL", "EMAIL_ADDRESS"]
    assert opts.phone_regions == ["GB"]


async def test_lifecycle_and_state() -> None:
    det = PiiDetector(PiiDetector.Options(entities=["EMAIL_ADDRESS"]))
    with pytest.raises(DetectorUnavailableError):
        await det.detect(["a@example.com"])
    await det.start()
    state = det.state()
    json.dumps(state)  # JSON-able
    assert state == {
        "backend": "patterns",
        "entities": ["EMAIL_ADDRESS"],
        "ner": None,
        "ner_entities": [],
        "phone_regions": ["US", "GB", "DE", "FR", "IN", "CA", "BR", "IL"],
        "loaded": True,
    }
    # only the configured entity is looked for
    result = await det.detect(["a@example.com, +44 20 7946 0958, 4111111111111111"])
    assert [f.label for f in result[0]] == ["EMAIL_ADDRESS"]
    await det.close()
    await det.close()  # idempotent, never raises
    assert det.state()["loaded"] is False
    with pytest.raises(DetectorUnavailableError):
        det.detect_sync(["a@example.com"])


def test_missing_spacy_model_fails_start_without_download() -> None:
    det = PiiDetector(PiiDetector.Options(ner=True, spacy_model="no_such_model_railwatch"))
    with pytest.raises(DetectorStartError, match="not installed"):
        det.start_sync()
    assert det.state()["loaded"] is False


def test_batch_is_one_list_per_text_in_order(patterns: PiiDetector) -> None:
    texts = MIXED * 40  # 200 texts in one call
    batched = patterns.detect_sync(texts)
    assert len(batched) == len(texts)
    singles = [patterns.detect_sync([t])[0] for t in MIXED]
    for i, findings in enumerate(batched):
        assert findings == singles[i % len(MIXED)]
    assert [f.label for f in singles[3]] == ["CREDIT_CARD", "PHONE_NUMBER"]
    assert [f.label for f in singles[4]] == ["IP_ADDRESS"]
    assert patterns.detect_sync([]) == []


def test_contexts_are_accepted_and_must_match(patterns: PiiDetector) -> None:
    ctx = [TextContext(stage="input")] * 2
    assert len(patterns.detect_sync(["a@example.com", "b"], ctx)) == 2
    with pytest.raises(ValueError, match="1 contexts for 2 texts"):
        patterns.detect_sync(["a@example.com", "b"], ctx[:1])


def test_findings_carry_metadata_but_never_text(patterns: PiiDetector) -> None:
    text = (
        MIXED[0] + " " + MIXED[3] + " SSN 536-22-8726 DE89370400440532013000 https://x.example.com"
    )
    findings = patterns.detect_sync([text])[0]
    assert {f.label for f in findings} == {
        "EMAIL_ADDRESS",
        "CREDIT_CARD",
        "PHONE_NUMBER",
        "US_SSN",
        "IBAN_CODE",
        "URL",
    }
    for f in findings:
        assert f.detector == "pii"
        assert set(f.metadata) == {"recognizer", "validated"}
        assert f.metadata["validated"] is True
        assert text[f.start : f.end] not in json.dumps(dict(f.metadata))
        with pytest.raises(TypeError):
            f.metadata["x"] = 1  # type: ignore[index]


def test_phone_leniency_and_regions_are_configurable() -> None:
    text = "call 030 901820 or 415-555-2671"
    us_only = PiiDetector(PiiDetector.Options(entities=["PHONE_NUMBER"], phone_regions=["US"]))
    us_only.start_sync()
    assert [text[f.start : f.end] for f in us_only.detect_sync([text])[0]] == ["415-555-2671"]
    possible = PiiDetector(
        PiiDetector.Options(
            entities=["PHONE_NUMBER"], phone_regions=["US"], phone_leniency="possible"
        )
    )
    possible.start_sync()
    # "possible" checks the length: an N11 area code passes it, "valid" rejects it ...
    assert possible.detect_sync(["see 211-555-0123"])[0]
    assert not us_only.detect_sync(["see 211-555-0123"])[0]
    # ... unless a phone context word vouches for it: then it is reported, unvalidated
    (f,) = us_only.detect_sync(["call 211-555-0123"])[0]
    assert (f.score, f.metadata["validated"]) == (0.6, False)
    strict = PiiDetector(
        PiiDetector.Options(
            entities=["PHONE_NUMBER"], phone_regions=["US"], phone_leniency="exact_grouping"
        )
    )
    # valid digits, but not grouped the way US numbers are written
    assert us_only.detect_sync(["call 41-5555-2671"])[0]
    strict.start_sync()
    assert strict.detect_sync(["call 415-555-2671"])[0]
    assert not strict.detect_sync(["call 41-5555-2671"])[0]


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record (and refuse) every DNS lookup and socket connect."""
    attempts: list[str] = []

    def refuse(*args: Any, **kwargs: Any) -> Any:
        attempts.append(repr(args[:2]))
        raise OSError("network disabled in this test")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    return attempts


def test_presidio_backend_runs_offline(no_network: list[str]) -> None:
    det = PiiDetector(PiiDetector.Options(backend="presidio"))
    det.start_sync()
    text = "mail john.doe@example.com, card 4111 1111 1111 1111, ip 10.1.2.3"
    findings = det.detect_sync([text, ""])
    labels = {f.label for f in findings[0]}
    assert {"EMAIL_ADDRESS", "CREDIT_CARD", "IP_ADDRESS"} <= labels
    assert findings[1] == []
    email = next(f for f in findings[0] if f.label == "EMAIL_ADDRESS")
    assert text[email.start : email.end] == "john.doe@example.com"
    assert email.metadata == {"recognizer": "EmailRecognizer", "validated": False}
    assert no_network == []  # tldextract never tried to fetch the suffix list


def test_pattern_tier_runs_offline(no_network: list[str]) -> None:
    det = PiiDetector()
    det.start_sync()
    assert det.detect_sync(["a@example.com www.example.org"])[0]
    assert no_network == []


def test_presidio_backend_rejects_unknown_entities() -> None:
    det = PiiDetector(PiiDetector.Options(backend="presidio", entities=["PERSON"]))
    with pytest.raises(DetectorStartError, match="no recognizer"):
        det.start_sync()  # PERSON needs ner: true

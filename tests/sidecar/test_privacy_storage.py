"""privacy.capture in storage: nothing raw where the setting says masked.

Unit tests for :class:`sidecar.privacy.StoragePrivacy` with a real pattern PII
detector, and an end-to-end test that reads the rows back from chDB.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest

from detectors.pii.detector import PiiDetector
from exporters.clickhouse import ClickHouseConfig, ClickHouseExporter
from detectors.secrets import SecretsDetector
from sidecar.privacy import (
    CheckedText,
    PrivacyDetectors,
    StoragePrivacy,
    load_pseudonym_key,
    ssn_shapes,
)
from sidecar.settings import PrivacySettings

EMAIL = "jane.doe@example.com"
SECRET_PATH = "/v1/models/sk-live-4f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c"


class CountingFinder:
    """The real pattern PII detector, remembering what text it was asked about."""

    def __init__(self) -> None:
        self.detector = PiiDetector(name="pii")
        asyncio.run(self.detector.start())
        self.seen: list[str] = []

    def __call__(self, text: str) -> Sequence[Any]:
        self.seen.append(text)
        return self.detector.detect_sync([text])[0]


@pytest.fixture(scope="module")
def finder() -> CountingFinder:
    return CountingFinder()


def privacy(finder: CountingFinder | None, capture: str = "masked", limit: int = 32_768,
            ) -> StoragePrivacy:
    settings = PrivacySettings(capture=capture, max_text_chars=limit)  # type: ignore[arg-type]
    return StoragePrivacy(settings, finder, b"k" * 32)


def test_the_guards_findings_are_reused_for_checked_text(finder: CountingFinder) -> None:
    segment = f"write to {EMAIL} please"
    found = finder(segment)
    finder.seen.clear()
    stored = privacy(finder).mask(
        f"system: be brief\nuser: {segment}",
        [CheckedText("input", "be brief", ()), CheckedText("input", segment, tuple(found))],
    )
    assert stored == "system: be brief\nuser: write to <EMAIL_ADDRESS_1> please"
    assert finder.seen == []  # role labels between checked segments need no detector


def test_only_the_detectors_the_guard_did_not_run_run_again(finder: CountingFinder) -> None:
    secrets = SecretsDetector(name="secrets")
    asyncio.run(secrets.start())
    calls: list[tuple[str, str]] = []

    class Recording:
        def __init__(self, name: str, inner: Any) -> None:
            self.name, self.inner = name, inner

        def detect_sync(self, texts: Sequence[str], contexts: Any = None) -> Any:
            calls.append((self.name, texts[0]))
            return self.inner.detect_sync(texts, contexts)

    detectors = PrivacyDetectors({"pii": Recording("pii", finder.detector),
                                  "secrets": Recording("secrets", secrets)})
    key = "ghp_" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8"
    answer = f"mail {EMAIL}, key {key}"
    pii_found = tuple(finder.detector.detect_sync([answer])[0])
    stored = privacy(None).__class__(PrivacySettings(), detectors, b"k" * 32).mask(
        answer, [CheckedText("output", answer, pii_found, frozenset({"pii"}))])
    assert stored is not None and EMAIL not in stored and key not in stored
    assert calls == [("secrets", answer)]  # the guard's PII findings were reused


def test_unchecked_text_is_detected_and_masked(finder: CountingFinder) -> None:
    finder.seen.clear()
    assert privacy(finder).mask(f"assistant said {EMAIL}") == "assistant said <EMAIL_ADDRESS_1>"
    assert finder.seen == [f"assistant said {EMAIL}"]


def test_text_is_cut_before_the_detectors_run(finder: CountingFinder) -> None:
    finder.seen.clear()
    huge = "10.0.0.1 " * 350_000  # about 3 MB of IP addresses
    stored = privacy(finder, limit=1000).mask(huge)
    assert stored is not None and len(stored) <= 1000
    assert max(len(t) for t in finder.seen) <= 1000 + 256
    assert "10.0.0.1" not in stored


@pytest.mark.parametrize(
    ("text", "spans"),
    [
        ("123-45-6789", [(0, 11)]),
        ("a 123-45-6789, and 987-65-4321.", [(2, 13), (19, 30)]),
        ("x123-45-6789", []),  # glued to a word
        ("-123-45-6789", []),
        ("123-45-67890", []),
        ("1234-56-7890", []),
        ("123-45-6789_", []),
        ("12-34-56-7890", []),
        ("٣٤٥-45-6789", [(0, 11)]),  # \d is any decimal digit
        ("²³¹-45-6789", []),  # superscripts are digits, not decimals
    ],
)
def test_ssn_shapes_reads_the_shapes(text: str, spans: list[tuple[int, int]]) -> None:
    assert list(ssn_shapes(text)) == spans


def test_ssn_shapes_agrees_with_the_regex_it_replaces() -> None:
    """Found from the middle ("-dd-", a literal first: 30x faster on 2 KB than a
    pattern that opens with a look-behind); the same spans on random text."""
    import random
    import re

    regex = re.compile(r"(?<![\w-])\d{3}-\d{2}-\d{4}(?![\w-])")
    rng = random.Random(8)
    pieces = ["123-45-6789", "123", "45", "6789", "-45-", "0", "-", " ", " ", "_", "a", ".",
              "\u0663", "\u00b2"]
    found = 0
    for _ in range(20000):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 16)))
        expected = [m.span() for m in regex.finditer(text)]
        assert list(ssn_shapes(text)) == expected, text
        found += len(expected)
    assert found > 100  # the texts hold shapes, not only near misses


def test_finisher_copies_a_record_only_when_something_changes(finder: CountingFinder) -> None:
    from sidecar.record import TraceRecord

    plain = TraceRecord(request_id="a" * 32, trace_id="b" * 32, span_id="c" * 16,
                        parent_span_id=None, started_at=1.0, ended_at=2.0, method="POST",
                        path="/v1/chat/completions", route="chat", upstream="http://u")
    finish = privacy(finder).finisher(None, None, ())
    assert finish is not None
    assert finish(plain) is plain  # no text kept, nothing to pseudonymise
    named = dataclasses.replace(plain, user=EMAIL, path="/v1/chat/completions?key=x")
    stored = finish(named)
    assert stored is not named
    assert stored.user is not None and stored.user.startswith("h_") and EMAIL not in stored.user
    assert stored.path == "/v1/chat/completions"
    with_text = privacy(finder).finisher(f"mail {EMAIL}", None, ())
    assert with_text is not None
    assert with_text(plain).prompt_text == "mail <EMAIL_ADDRESS_1>"


def test_ssn_shaped_test_numbers_are_masked_in_storage(finder: CountingFinder) -> None:
    # the detector declines 123-45-6789 (a known placeholder); storage masks it anyway
    assert privacy(finder).mask("my ssn is 123-45-6789") == "my ssn is <US_SSN_1>"


def test_identifiers_and_paths(finder: CountingFinder) -> None:
    p = privacy(finder)
    pseudonym = p.pseudonym(EMAIL)
    assert pseudonym is not None and pseudonym.startswith("h_") and len(pseudonym) == 34
    assert p.pseudonym(EMAIL) == pseudonym  # stable: traces still group by user
    assert StoragePrivacy(PrivacySettings(), finder, b"x" * 32).pseudonym(EMAIL) != pseudonym
    assert p.path(SECRET_PATH + "?api_key=abc") == "/v1/models/{id}"
    assert p.path("/v1/chat/completions") == "/v1/chat/completions"
    assert p.tenant("acme") == "acme" and p.tenant(EMAIL) == "<EMAIL_ADDRESS_1>"
    raw = privacy(finder, capture="raw")
    assert raw.pseudonym(EMAIL) == EMAIL and raw.path(SECRET_PATH) == SECRET_PATH
    assert privacy(None).tenant(EMAIL) == privacy(None).pseudonym(EMAIL)  # no detector


def test_hand_off_identifiers_follow_the_capture_setting(finder: CountingFinder) -> None:
    from sidecar.handoff.content import ContentPolicy

    policy = ContentPolicy("masked", pii=finder, storage=privacy(finder))
    conversation, tenant = policy.identifiers(EMAIL, EMAIL)
    assert conversation == privacy(finder).pseudonym(EMAIL) and tenant == "<EMAIL_ADDRESS_1>"
    assert ContentPolicy("raw").identifiers(EMAIL, "acme") == (EMAIL, "acme")


def test_the_pseudonym_key_is_kept_in_the_data_dir(tmp_path: Path) -> None:
    key = load_pseudonym_key(None, tmp_path)
    assert len(key) == 32 and (tmp_path / "privacy.key").stat().st_mode & 0o777 == 0o600
    assert load_pseudonym_key(None, tmp_path) == key
    assert load_pseudonym_key("configured", tmp_path) == b"configured"


def test_stored_rows_hold_nothing_raw(
    tmp_path: Path, backend: Any, database: str, start_sidecar: Any, demo_upstream: Any,
) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        "detectors:\n  pii: {kind: pii}\n  secrets: {kind: secrets}\n"
        "routes:\n  - name: r\n    input: [{detector: pii, action: mask},"
        " {detector: secrets, action: flag}]\n    output: [{detector: pii, action: flag}]\n"
    )
    clickhouse = ClickHouseExporter(ClickHouseConfig(
        dsn=backend.dsn, database=database, data_dir=tmp_path / "data",
        spill_dir=tmp_path / "spill", insert_max_age_s=0.05, ttl_text_days=None,
    ))
    sc = start_sidecar(
        demo_upstream.url, exporters=[clickhouse],
        guardrails={"enabled": True, "policy": str(policy)}, privacy={"capture": "masked"},
    )
    client = openai.OpenAI(base_url=sc.base_url, api_key="x", max_retries=0,
                           default_headers={"x-railwatch-tenant": EMAIL,
                                            "x-railwatch-conversation-id": EMAIL})
    raw = client.chat.completions.with_raw_response.create(
        model="m", user=EMAIL, messages=[{"role": "user", "content": f"mail {EMAIL} now"}])
    trace_id = raw.headers["x-railwatch-trace-id"]
    assert EMAIL in (raw.parse().choices[0].message.content or "")  # the client's own, restored

    async def calls() -> None:
        async with aiohttp.ClientSession() as s:
            async with s.get(sc.url + SECRET_PATH) as r:
                await r.read()
            async with s.post(sc.url + "/v1/feedback", json={
                "trace_id": trace_id, "thumbs": "down", "user": EMAIL,
                "comment": f"reach me at {EMAIL}", "corrected_answer": f"use {EMAIL}",
            }) as r:
                assert r.status == 201, await r.text()

    asyncio.run(calls())
    sc.memory.wait_for(lambda rs: len(rs) >= 2)
    assert sc.runtime.intake.force_flush(10)
    rows = backend.admin.query(
        f"SELECT path, user, tenant, conversation_id, prompt_text, output_text, text_masked "
        f"FROM {database}.traces FINAL ORDER BY started_at").result_rows
    feedback = backend.admin.query(
        f"SELECT user, comment, corrected_answer FROM {database}.feedback").result_rows
    assert len(rows) == 2 and len(feedback) == 1
    chat, models = rows
    assert chat[0] == "/v1/chat/completions" and models[0] == "/v1/models/{id}"
    assert chat[1].startswith("h_") and chat[3].startswith("h_") and chat[2] == "<EMAIL_ADDRESS_1>"
    assert "<EMAIL_ADDRESS_1>" in chat[4] and "<EMAIL_ADDRESS_1>" in chat[5] and chat[6]
    assert feedback[0][0].startswith("h_") and "<EMAIL_ADDRESS_1>" in feedback[0][1]
    stored = repr(rows) + repr(feedback)
    assert EMAIL not in stored and "sk-live" not in stored

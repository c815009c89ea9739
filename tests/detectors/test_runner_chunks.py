"""Long texts in overlapping chunks: the same findings as one call, and abandonable."""

from __future__ import annotations

import asyncio
import random
import string
import threading
import time

import pytest

from detectors import registry
from detectors.base import ChunkableDetector, Finding
from detectors.chunks import detect_in_chunks
from detectors.runner import DetectorRunner, RunSettings

_rng = random.Random(7)
ALNUM = string.ascii_letters + string.digits


def _rand(n: int) -> str:
    return "".join(_rng.choice(ALNUM) for _ in range(n))


PEM = ("-----BEGIN RSA PRIVATE KEY-----\n"
       + "\n".join(_rand(64) for _ in range(25))
       + "\n-----END RSA PRIVATE KEY-----")
VALUES = [
    "jane.doe{i}@example.com", "4111 1111 1111 1111", "+1 415 555 0{i:03d}",
    "DE89 3704 0044 0532 0130 00", "10.1.{i}.7", "https://example.org/p/{i}?q=a@b.com",
    "gh" + "p_" + _rand(36), "sk" + "-" + _rand(48), "AK" + "IA" + "IOSFODNN7" + "EXAMPLE", PEM,
]


def _text(chars: int) -> str:
    parts: list[str] = []
    size = i = 0
    while size < chars:
        filler = " ".join(_rng.choice(["lorem", "ipsum", "card", "mail", "key", "the"])
                          for _ in range(_rng.randint(0, 40)))
        value = _rng.choice(VALUES).format(i=i)
        parts.append(f"{filler} {value} ")
        size += len(parts[-1])
        i += 1
    return "".join(parts)


def _spans(findings: list[Finding]) -> set[tuple[str, int, int]]:
    return {(f.label, f.start, f.end) for f in findings}


@pytest.mark.parametrize("kind", ["pii", "secrets"])
def test_chunks_find_what_one_call_finds(kind: str) -> None:
    options = {"max_findings": 1_000_000} if kind == "secrets" else {}  # no cap to compare
    detector = registry.create(kind, options, name=kind)
    asyncio.run(detector.start())
    assert isinstance(detector, ChunkableDetector)
    text = _text(300_000)
    whole = detector.detect_sync([text])[0]
    overlap = detector.max_span_chars
    for chunk in (2 * overlap, 2 * overlap + 777, 65_536):
        chunked = detect_in_chunks(detector, text, None, chunk, overlap, threading.Event())
        assert _spans(chunked) == _spans(whole), chunk
        assert len(chunked) == len(whole)


def test_a_chunked_detection_stops_when_its_caller_times_out() -> None:
    """The worker thread gives up at the next chunk instead of running to the end."""
    detector = registry.create("pii", {}, name="pii")
    asyncio.run(detector.start())
    runner = DetectorRunner()
    runner.add(detector, RunSettings(timeout_s=0.05, timeout_s_per_mchar=0, chunk_chars=8192))
    calls = 0
    inner = detector.detect_sync  # type: ignore[attr-defined]

    def counting(texts: list[str], contexts: object = None) -> list[list[Finding]]:
        nonlocal calls
        calls += 1
        time.sleep(0.01)
        return inner(texts, contexts)  # type: ignore[no-any-return]

    detector.detect_sync = counting  # type: ignore[attr-defined, method-assign]

    async def go() -> str | None:
        await runner.start()
        outcome = await runner.run("pii", _text(1_000_000))
        await asyncio.sleep(0.3)  # let the thread notice
        return outcome.error

    assert asyncio.run(go()) == "timeout"
    settled = calls
    time.sleep(0.2)
    assert calls == settled  # stopped
    assert settled < 1_000_000 // (8192 - 4096) // 2  # far fewer chunks than the text holds


def test_a_finding_just_after_a_chunk_start_keeps_its_context_words() -> None:
    """A bare phone number needs a context word before it ("call"): it is found when
    the chunk boundary falls between the word and the number, as in one call."""
    detector = registry.create("pii", {}, name="pii")
    asyncio.run(detector.start())
    assert isinstance(detector, ChunkableDetector)
    overlap = detector.max_span_chars
    chunk = 2 * overlap
    head = "x" * (chunk - overlap - len("please call ")) + " please call "
    text = head + "4155552671 today " + "y " * chunk
    whole = _spans(detector.detect_sync([text])[0])
    assert any(label == "PHONE_NUMBER" for label, _, _ in whole)
    chunked = detect_in_chunks(detector, text, None, chunk, overlap, threading.Event())
    assert _spans(chunked) == whole

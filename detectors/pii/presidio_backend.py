"""presidio's own AnalyzerEngine, configured to run fully offline.

Stock presidio does two network things we must not: ``AnalyzerEngine()`` builds a
spaCy engine for ``en_core_web_lg`` and calls ``spacy.cli.download`` when it is
missing, and ``EmailRecognizer.validate_result`` calls ``tldextract.extract``,
whose first use fetches the Public Suffix List. Here:

- with ``ner`` the NLP engine is presidio's ``SpacyNlpEngine`` over the configured
  model, checked to be installed *before* presidio sees it (so its download path
  is never reached); without ``ner`` it is presidio's ``NoOpNlpEngine``, which
  loads nothing (context words in the text then do not raise scores, as presidio
  documents for that engine);
- the recognizer registry is presidio's default one (the same YAML presidio
  loads), with the e-mail recognizer replaced by a subclass whose TLD check uses
  tldextract's bundled snapshot, and the phone recognizer built with our
  configured regions and leniency (presidio's defaults unless changed).

This backend is the reference in ``bench/`` and an option for users who want
presidio's full recognizer set (UUID, MAC, crypto wallets, US passports...). It
is about 300x slower than the pattern tier.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from detectors.errors import DetectorStartError
from detectors.pii._tlds import offline_extractor
from detectors.pii.ner import model_installed
from detectors.pii.scanner import RawMatch

__all__ = ["PresidioBackend"]

_LENIENCY_NUMBER = {"possible": 0, "valid": 1, "strict_grouping": 2, "exact_grouping": 3}


def _offline_email_recognizer() -> Any:
    from presidio_analyzer.predefined_recognizers import EmailRecognizer

    class OfflineEmailRecognizer(EmailRecognizer):
        """presidio's EmailRecognizer with tldextract's offline snapshot."""

        def validate_result(self, pattern_text: str) -> bool:
            result = offline_extractor()(pattern_text)  # type: ignore[operator]
            return bool(result.fqdn)

    return OfflineEmailRecognizer(name="EmailRecognizer")


class PresidioBackend:
    """Builds presidio's engine in ``load`` and analyses batches in ``run``."""

    def __init__(
        self,
        entities: Sequence[str],
        ner: bool,
        ner_entities: Sequence[str],
        spacy_model: str,
        phone_regions: Sequence[str],
        phone_leniency: str,
        batch_size: int,
    ) -> None:
        self.entities = list(entities) + (list(ner_entities) if ner else [])
        self.ner = ner
        self.spacy_model = spacy_model
        self.phone_regions = tuple(phone_regions)
        self.phone_leniency = phone_leniency
        self.batch_size = batch_size
        self._batch: Any = None
        self._lock = threading.Lock()

    @property
    def loaded(self) -> bool:
        return self._batch is not None

    def load(self) -> None:
        """Build the engine (seconds with a spaCy model). Raises DetectorStartError."""
        try:
            from presidio_analyzer import AnalyzerEngine, BatchAnalyzerEngine
            from presidio_analyzer.nlp_engine import NoOpNlpEngine, SpacyNlpEngine
            from presidio_analyzer.predefined_recognizers import PhoneRecognizer
        except ImportError as exc:  # pragma: no cover - presidio is a dependency
            raise DetectorStartError("pii: backend presidio needs presidio-analyzer") from exc
        models = [{"lang_code": "en", "model_name": self.spacy_model}]
        if self.ner:
            if not model_installed(self.spacy_model):
                raise DetectorStartError(
                    f"pii: spaCy model {self.spacy_model!r} is not installed; presidio would "
                    "try to download it, which this deployment does not allow"
                )
            nlp_engine: Any = SpacyNlpEngine(models=models)
        else:
            nlp_engine = NoOpNlpEngine(models=models)
        try:
            engine = AnalyzerEngine(nlp_engine=nlp_engine, supported_languages=["en"])
            registry = engine.registry
            registry.remove_recognizer("EmailRecognizer")
            registry.add_recognizer(_offline_email_recognizer())
            registry.remove_recognizer("PhoneRecognizer")
            registry.add_recognizer(
                PhoneRecognizer(
                    supported_regions=self.phone_regions,
                    leniency=_LENIENCY_NUMBER[self.phone_leniency],
                )
            )
            supported = set(engine.get_supported_entities(language="en"))
        except Exception as exc:  # presidio raises ValueError, OSError, KeyError...
            raise DetectorStartError(
                f"pii: building presidio's AnalyzerEngine failed ({type(exc).__name__})"
            ) from exc
        unknown = sorted(set(self.entities) - supported)
        if unknown:
            raise DetectorStartError(
                f"pii: presidio has no recognizer for entities {unknown} "
                f"(with ner={self.ner}); supported: {sorted(supported)}"
            )
        self._batch = BatchAnalyzerEngine(analyzer_engine=engine)

    def run(self, texts: Sequence[str]) -> list[list[RawMatch]]:
        """presidio's results per text; ``validated`` is False (presidio does not say)."""
        batch = self._batch
        if batch is None:
            raise RuntimeError("PresidioBackend.run before load")
        with self._lock:
            results = batch.analyze_iterator(
                list(texts), language="en", batch_size=self.batch_size, entities=self.entities
            )
        out: list[list[RawMatch]] = []
        for per_text in results:
            found = []
            for r in per_text:
                meta = r.recognition_metadata or {}
                recognizer = str(meta.get("recognizer_name", "presidio"))
                found.append(
                    RawMatch(r.entity_type, r.start, r.end, float(r.score), recognizer, False)
                )
            out.append(found)
        return out

    def close(self) -> None:
        self._batch = None

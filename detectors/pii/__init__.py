"""PII detection: presidio-named entities from a fast pattern tier, spaCy NER or presidio.

Entry point ``pii = "detectors.pii:PiiDetector"``. See :mod:`detectors.pii.detector`
for options, labels, scores and finding metadata.
"""

from __future__ import annotations

from detectors.pii.detector import PiiDetector, PiiOptions
from detectors.pii.scanner import PATTERN_ENTITIES

__all__ = ["PATTERN_ENTITIES", "PiiDetector", "PiiOptions"]

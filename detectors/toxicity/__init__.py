"""Toxicity detector: Detoxify scores per label, with a profanity-model fallback.

Importing this package imports neither torch nor transformers; models load in
:meth:`ToxicityDetector.start`.
"""

from __future__ import annotations

from detectors.toxicity.detector import ToxicityDetector

__all__ = ["ToxicityDetector"]

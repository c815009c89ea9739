"""``ToxicityDetector``: Detoxify scores per label, or a profanity fallback.

Backends, chosen once in :meth:`ToxicityDetector.start`:

- ``detoxify``: a Detoxify checkpoint (``original``, ``unbiased``, ``multilingual``) from
  a self-contained model folder (:mod:`detectors.toxicity.folder`), batched, on CUDA in
  half precision when present, else CPU. Labels are Detoxify's (6 for ``original``,
  7 with ``sexual_explicit`` for the others, read from the folder).
- ``profanity``: alt-profanity-check's linear model (CPU, offline, tens of thousands of
  texts/s); one label, ``toxicity``, meaning "contains offensive/profane language"
  (see :mod:`detectors.toxicity._profanity` for what it does and does not catch).

``backend: auto`` uses Detoxify when a folder is configured (``model_dir``) or found at
``<models_root>/detoxify-<checkpoint>``, and otherwise falls back to ``profanity``,
saying so in the log (warning), in :meth:`state` (``fallback_reason``) and in
:attr:`backend`. It also falls back when a folder is there but torch/transformers are
not installed. A folder that is there but damaged, or an explicit ``model_dir`` that does
not exist, is an error, not a reason to fall back. ``backend: detoxify`` never falls back.

Findings: one per label per text, spanning the whole text, with the score; no
thresholds (the policy holds them). Metadata: ``backend``, ``checkpoint`` and
``truncated`` (true when the text was longer than the windows scored).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal, Protocol

import numpy as np
import pydantic

from detectors.base import Finding, TextContext
from detectors.errors import DetectorStartError, DetectorUnavailableError
from detectors.toxicity.folder import default_model_dir, read_model_folder

log = logging.getLogger(__name__)


class _Scorer(Protocol):
    backend: str  # "detoxify" | "profanity"
    labels: tuple[str, ...]
    checkpoint: str
    device: str
    dtype: str

    def score(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]: ...

    def close(self) -> None: ...


class ToxicityDetector:
    """Whole-text toxicity scores per Detoxify label (see the module docstring).

    ``__init__`` only stores options; ``start`` loads (seconds, blocking work done in a
    thread) and may raise :class:`DetectorStartError`; ``detect_sync`` blocks (the
    runner calls it in a worker thread); ``close`` never raises.
    """

    name = "toxicity"
    blocking = True

    class Options(pydantic.BaseModel):
        """Policy options of the toxicity detector."""

        model_config = pydantic.ConfigDict(extra="forbid", use_attribute_docstrings=True)

        backend: Literal["auto", "detoxify", "profanity"] = "auto"
        """``auto``: Detoxify if a folder is there, else profanity; ``detoxify``: required."""
        model_dir: str | None = None
        """A folder written by ``railwatch models pull detoxify``; overrides the lookup."""
        checkpoint: Literal["original", "unbiased", "multilingual"] = "original"
        """Finds ``<models_root>/detoxify-<checkpoint>`` when ``model_dir`` is unset."""
        models_root: str | None = None
        """Default ``$RAILWATCH_MODELS_DIR``, else ``~/.cache/railwatch/models``."""
        device: str = "auto"
        """``auto`` (cuda when available, else cpu), ``cpu``, ``cuda``, ``cuda:N``."""
        dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"
        """``auto``: float16 on CUDA, float32 on CPU."""
        max_length: int = pydantic.Field(default=256, ge=8, le=8192)
        """Tokens per window (special tokens included)."""
        max_windows: int = pydantic.Field(default=4, ge=1, le=64)
        """Windows of ``max_length`` tokens scored per long text (1 = truncate)."""
        batch_size: int = pydantic.Field(default=64, ge=1, le=4096)
        """Windows per forward pass."""

    def __init__(self, options: Options | None = None, *, name: str | None = None) -> None:
        self.options = options if options is not None else self.Options()
        if name is not None:
            self.name = name
        self._scorer: _Scorer | None = None
        self._fallback_reason: str | None = None
        self._meta: tuple[Mapping[str, Any], Mapping[str, Any]] = (
            MappingProxyType({}),
            MappingProxyType({}),
        )

    # -- lifecycle --------------------------------------------------------------------

    async def start(self) -> None:
        """Choose and load the backend. Raises :class:`DetectorStartError`."""
        if self._scorer is not None:
            return
        scorer = await asyncio.to_thread(self._load)
        self._scorer = scorer
        base = {"backend": self.backend, "checkpoint": scorer.checkpoint}
        self._meta = (
            MappingProxyType({**base, "truncated": False}),
            MappingProxyType({**base, "truncated": True}),
        )

    def _load(self) -> _Scorer:
        opts = self.options
        if opts.backend == "profanity":
            return self._load_profanity(reason=None)
        if opts.model_dir is not None:
            folder_path = Path(opts.model_dir).expanduser()
            if not folder_path.exists():
                raise DetectorStartError(
                    f"toxicity option model_dir={opts.model_dir!r}: folder does not exist"
                )
        else:
            folder_path = default_model_dir(opts.checkpoint, opts.models_root)
            if not folder_path.exists():
                if opts.backend == "detoxify":
                    raise DetectorStartError(
                        "toxicity option backend='detoxify' needs a model folder, but "
                        f"model_dir is unset and {folder_path} does not exist; set model_dir "
                        "(or models_root), or write the folder with "
                        f"`railwatch models pull detoxify --checkpoint {opts.checkpoint}`"
                    )
                return self._load_profanity(
                    reason=f"no Detoxify model folder at {folder_path} and no model_dir set"
                )
        folder = read_model_folder(folder_path)
        if "checkpoint" in opts.model_fields_set and folder.checkpoint != opts.checkpoint:
            raise DetectorStartError(
                f"toxicity option checkpoint={opts.checkpoint!r}, but model folder "
                f"{folder.path} holds {folder.checkpoint!r}"
            )
        try:
            import torch  # noqa: F401
            import transformers  # noqa: F401
        except ImportError as exc:
            if opts.backend == "detoxify":
                raise DetectorStartError(
                    f"toxicity backend 'detoxify' needs torch and transformers "
                    f"(pip install 'railwatch[models]'): {exc}"
                ) from exc
            return self._load_profanity(reason=f"torch/transformers not installed ({exc})")
        from detectors.toxicity._transformer import TransformerScorer

        scorer = TransformerScorer.load(
            folder,
            device=opts.device,
            dtype=opts.dtype,
            max_length=opts.max_length,
            batch_size=opts.batch_size,
            max_windows=opts.max_windows,
        )
        log.info(
            "toxicity detector %r: backend detoxify, checkpoint %s from %s on %s (%s), "
            "%d labels, max_length %d x %d windows, batch %d",
            self.name,
            scorer.checkpoint,
            folder.path,
            scorer.device,
            scorer.dtype,
            len(scorer.labels),
            opts.max_length,
            opts.max_windows,
            opts.batch_size,
        )
        return scorer

    def _load_profanity(self, *, reason: str | None) -> _Scorer:
        from detectors.toxicity._profanity import ProfanityScorer

        scorer = ProfanityScorer.load()
        self._fallback_reason = reason
        if reason is None:
            log.info("toxicity detector %r: backend profanity (configured)", self.name)
        else:
            log.warning(
                "toxicity detector %r: falling back to backend profanity "
                "(offensive-language score under label 'toxicity' only): %s",
                self.name,
                reason,
            )
        return scorer

    async def close(self) -> None:
        """Release the model. Never raises."""
        scorer, self._scorer = self._scorer, None
        if scorer is not None:
            try:
                scorer.close()
            except Exception:
                log.warning("toxicity detector %r: error on close", self.name, exc_info=True)

    # -- detection --------------------------------------------------------------------

    async def detect(
        self, texts: Sequence[str], contexts: Sequence[TextContext] | None = None
    ) -> list[list[Finding]]:
        """Run :meth:`detect_sync` in a worker thread."""
        return await asyncio.to_thread(self.detect_sync, texts, contexts)

    def detect_sync(
        self, texts: Sequence[str], contexts: Sequence[TextContext] | None = None
    ) -> list[list[Finding]]:
        """One finding per label per text, in input order. Blocks; may raise."""
        scorer = self._scorer
        if scorer is None:
            raise DetectorUnavailableError(f"toxicity detector {self.name!r} is not started")
        if not texts:
            return []
        scores, truncated = scorer.score(texts)
        name, labels, meta = self.name, scorer.labels, self._meta
        results: list[list[Finding]] = []
        for text, row, cut in zip(texts, scores.tolist(), truncated.tolist(), strict=True):
            end, md = len(text), meta[cut]
            results.append(
                [
                    Finding(name, label, min(max(s, 0.0), 1.0), 0, end, md)
                    for label, s in zip(labels, row, strict=True)
                ]
            )
        return results

    # -- introspection ----------------------------------------------------------------

    @property
    def backend(self) -> str:
        """``"detoxify"`` or ``"profanity"``; raises :class:`DetectorUnavailableError` before start."""
        scorer = self._scorer
        if scorer is None:
            raise DetectorUnavailableError(f"toxicity detector {self.name!r} is not started")
        return scorer.backend

    @property
    def labels(self) -> tuple[str, ...]:
        """Labels reported per text (empty before start)."""
        return self._scorer.labels if self._scorer is not None else ()

    def state(self) -> dict[str, Any]:
        """Readiness facts for ``/readyz`` (text-free)."""
        scorer = self._scorer
        if scorer is None:
            return {"backend": None, "started": False}
        state: dict[str, Any] = {
            "backend": self.backend,
            "checkpoint": scorer.checkpoint,
            "device": scorer.device,
            "dtype": scorer.dtype,
            "labels": list(scorer.labels),
        }
        if self._fallback_reason is not None:
            state["fallback_reason"] = self._fallback_reason
        return state

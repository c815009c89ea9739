"""``ToxicityDetector``: Detoxify scores per label, or an offline fallback.

Backends, chosen in :meth:`ToxicityDetector.start`:

- ``detoxify``: a Detoxify checkpoint (``original``, ``unbiased``, ``multilingual``) from
  a self-contained model folder (:mod:`detectors.toxicity.folder`), batched, on CUDA in
  half precision when present, else CPU. Labels are Detoxify's (6 for ``original``,
  7 with ``sexual_explicit`` for the others, read from the folder).
- ``bilstm``: the Jigsaw-trained BiLSTM shipped in ``toxic-comment-classifier``, ported
  to torch (:mod:`detectors.toxicity._bilstm`): CPU, offline, Detoxify ``original``'s
  six labels; a little better than ``profanity`` on HateCheck, 7-20x its CPU.
- ``profanity``: alt-profanity-check's linear model (CPU, offline, the cheapest, the
  default fallback); one label, ``toxicity``, meaning "contains offensive/profane
  language" (see :mod:`detectors.toxicity._profanity` for what it does and does not catch).

``backend: auto`` uses Detoxify when a folder is configured (``model_dir``) or found at
``<models_root>/detoxify-<checkpoint>``. Without one it starts at once on the fallback
(``fallback``: ``profanity``, or ``bilstm``, which becomes ``profanity`` when its package
is missing) and, unless downloads are forbidden (option ``download: false``,
``HF_HUB_OFFLINE``/``TRANSFORMERS_OFFLINE``, ``RAILWATCH_MODEL_DOWNLOADS=0``) or torch and
transformers are missing, fetches Detoxify's weights once in the background
(:mod:`detectors.toxicity.fetch`, bounded by ``download_timeout_s``) and switches to
``detoxify`` when they are loaded. Start-up never waits on the network. When the fetch
is impossible or fails, a warning line says so and why; :meth:`state` carries
``fallback_reason`` and ``fetch``, and :attr:`backend` (the metric label) the fallback's
name. A folder that is there but damaged, or an explicit ``model_dir`` that does not
exist, is an error, not a reason to fall back. ``backend: detoxify`` never falls back.

Cheap backends run small batches inline: ``detect`` scores a batch of at most
``inline_chars`` characters directly in the caller (under a millisecond of CPU,
measured in ``bench/bench_detectors_toxicity.py``), and larger ones in a worker thread.
The detector is ``blocking`` (always a worker thread, run by the runner) only when it
will start on Detoxify.

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
from typing import Any

from detectors.base import Finding, TextContext
from detectors.errors import DetectorUnavailableError
from detectors.toxicity._memo import ScoreMemo
from detectors.toxicity.backends import BackendLoader, Scorer
from detectors.toxicity.folder import default_model_dir
from detectors.toxicity.options import ToxicityOptions

log = logging.getLogger(__name__)


class ToxicityDetector:
    """Whole-text toxicity scores per label (see the module docstring).

    ``__init__`` only stores options; ``start`` loads (a second for the offline
    backends, seconds for Detoxify; blocking work done in a thread) and may raise
    :class:`DetectorStartError`; ``detect_sync`` blocks; ``detect`` blocks the loop only
    for batches under ``inline_chars``; ``close`` never raises.
    """

    name = "toxicity"
    blocking = True

    Options = ToxicityOptions

    def __init__(self, options: ToxicityOptions | None = None, *, name: str | None = None) -> None:
        self.options = options if options is not None else ToxicityOptions()
        if name is not None:
            self.name = name
        opts = self.options
        self.blocking = opts.backend == "detoxify" or (
            opts.backend == "auto"
            and (opts.model_dir is not None or self._default_folder().exists())
        )
        self._scorer: Scorer | None = None
        self._fallback_reason: str | None = None
        self._loader: BackendLoader | None = None
        self._fetch: Any = None  # BackgroundFetch while or after fetching
        self._meta: tuple[Mapping[str, Any], Mapping[str, Any]] = (
            MappingProxyType({}),
            MappingProxyType({}),
        )
        self._memo = ScoreMemo(opts.memo_entries) if opts.memo_entries else None

    def _default_folder(self) -> Path:
        return default_model_dir(self.options.checkpoint, self.options.models_root)

    # -- lifecycle --------------------------------------------------------------------

    async def start(self) -> None:
        """Choose and load the backend. Raises :class:`DetectorStartError`."""
        if self._scorer is not None:
            return
        loader = self._loader = BackendLoader(self.name, self.options)
        scorer, plan = await asyncio.to_thread(loader.load)
        self._fallback_reason = loader.fallback_reason
        self._use(scorer)
        if plan is not None:
            from detectors.toxicity._background import BackgroundFetch

            self._fetch = BackgroundFetch(
                plan, loader.load_detoxify, self._switch, self._fetch_failed
            )
            self._fetch.start()

    def _use(self, scorer: Scorer) -> None:
        """Make ``scorer`` current: metadata first, so a reader never pairs new with old."""
        self._meta = _meta_for(scorer)
        self._scorer = scorer

    def _switch(self, scorer: Scorer) -> None:
        """Called from the fetch thread when Detoxify is loaded: use it from now on."""
        if self._scorer is None:  # closed meanwhile
            scorer.close()
            return
        old = self._scorer
        self._use(scorer)
        self._fallback_reason = None
        log.info("toxicity detector %r: switched from %s to detoxify", self.name, old.backend)

    def _fetch_failed(self, code: str, message: str) -> None:
        scorer = self._scorer
        kind = scorer.backend if scorer is not None else self.options.fallback
        self._fallback_reason = f"fetching Detoxify failed ({code}): {message}"
        if self._loader is not None:
            self._loader.banner(kind, self._fallback_reason)

    async def close(self) -> None:
        """Stop a fetch in progress and release the model. Never raises."""
        scorer, self._scorer = self._scorer, None
        if self._fetch is not None:
            await asyncio.to_thread(self._fetch.stop)
        if scorer is not None:
            try:
                scorer.close()
            except Exception:
                log.warning("toxicity detector %r: error on close", self.name, exc_info=True)

    # -- detection --------------------------------------------------------------------

    async def detect(
        self, texts: Sequence[str], contexts: Sequence[TextContext] | None = None
    ) -> list[list[Finding]]:
        """Score inline when the batch is under ``inline_chars``, else in a worker thread."""
        scorer = self._scorer
        if scorer is not None:
            limit = self.options.inline_chars
            limit = scorer.inline_chars if limit is None else limit
            if limit and sum(len(text) for text in texts) <= limit:
                return self.detect_sync(texts, contexts)
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
        memo = self._memo
        if memo is None:
            return self._score(scorer, texts)
        # prompts only: they are what comes again (history, system prompts); answers and
        # stream windows rarely do, and would push them out
        keys = [
            memo.key(scorer.checkpoint, text)
            if contexts is None or contexts[i].stage == "input" else None
            for i, text in enumerate(texts)
        ]
        known = [memo.get(key) if key is not None else None for key in keys]
        todo = [i for i, found in enumerate(known) if found is None]
        if todo:
            scored = self._score(scorer, [texts[i] for i in todo] if len(todo) < len(texts)
                                 else texts)
            for i, findings in zip(todo, scored, strict=True):
                key, fresh = keys[i], tuple(findings)
                known[i] = fresh
                if key is not None:
                    memo.put(key, fresh)
        return [list(found) for found in known if found is not None]

    def _score(self, scorer: Scorer, texts: Sequence[str]) -> list[list[Finding]]:
        scores, truncated = scorer.score(texts)
        name, labels, meta = self.name, scorer.labels, self._meta
        if meta[0].get("backend") != scorer.backend:  # switched while this call ran
            meta = _meta_for(scorer)
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
        """``"detoxify"``, ``"bilstm"`` or ``"profanity"``; raises :class:`DetectorUnavailableError` before start."""
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
        if self._fetch is not None:
            state["fetch"] = self._fetch.state()
        if self._memo is not None:
            state["memo"] = self._memo.state()
        return state


def _meta_for(scorer: Scorer) -> tuple[Mapping[str, Any], Mapping[str, Any]]:
    """Finding metadata of ``scorer``: ``(not truncated, truncated)``."""
    base = {"backend": scorer.backend, "checkpoint": scorer.checkpoint}
    return (
        MappingProxyType({**base, "truncated": False}),
        MappingProxyType({**base, "truncated": True}),
    )

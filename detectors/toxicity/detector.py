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
from typing import Any, Literal, Protocol

import numpy as np
import pydantic

from detectors.base import Finding, TextContext
from detectors.errors import DetectorStartError, DetectorUnavailableError
from detectors.toxicity.fetch import FetchPlan, downloads_forbidden
from detectors.toxicity.folder import ModelFolder, default_model_dir, read_model_folder

log = logging.getLogger(__name__)


class _Scorer(Protocol):
    backend: str  # "detoxify" | "bilstm" | "profanity"
    labels: tuple[str, ...]
    checkpoint: str
    device: str
    dtype: str
    inline_chars: int

    def score(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]: ...

    def close(self) -> None: ...


class ToxicityDetector:
    """Whole-text toxicity scores per label (see the module docstring).

    ``__init__`` only stores options; ``start`` loads (a second for the offline
    backends, seconds for Detoxify; blocking work done in a thread) and may raise
    :class:`DetectorStartError`; ``detect_sync`` blocks; ``detect`` blocks the loop only
    for batches under ``inline_chars``; ``close`` never raises.
    """

    name = "toxicity"
    blocking = True

    class Options(pydantic.BaseModel):
        """Policy options of the toxicity detector."""

        model_config = pydantic.ConfigDict(extra="forbid", use_attribute_docstrings=True)

        backend: Literal["auto", "detoxify", "bilstm", "profanity"] = "auto"
        """``auto``: Detoxify if a folder is there (else fetch it, fallback meanwhile)."""
        fallback: Literal["bilstm", "profanity"] = "profanity"
        """What ``auto`` runs while Detoxify is not there."""
        download: bool = True
        """Let ``auto`` fetch Detoxify's weights once when no folder is there."""
        download_timeout_s: float = pydantic.Field(default=900.0, gt=0, le=86_400)
        """Longest the whole background fetch may take, in seconds."""
        connect_timeout_s: float = pydantic.Field(default=10.0, gt=0, le=600)
        """Longest one connect or read may wait, in seconds."""
        checkpoint_url: str | None = None
        """Where the checkpoint comes from (default: Detoxify's release URL); a mirror."""
        base_url: str | None = None
        """Folder URL of the base model's config and tokenizer (default: the HF hub)."""
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
        inline_chars: int | None = pydantic.Field(default=None, ge=0)
        """Batches up to this many characters run in the caller (None: the backend's default)."""

    def __init__(self, options: Options | None = None, *, name: str | None = None) -> None:
        self.options = options if options is not None else self.Options()
        if name is not None:
            self.name = name
        opts = self.options
        self.blocking = opts.backend == "detoxify" or (
            opts.backend == "auto"
            and (opts.model_dir is not None or self._default_folder().exists())
        )
        self._scorer: _Scorer | None = None
        self._fallback_reason: str | None = None
        self._fetch: Any = None  # BackgroundFetch while or after fetching
        self._meta: tuple[Mapping[str, Any], Mapping[str, Any]] = (
            MappingProxyType({}),
            MappingProxyType({}),
        )

    def _default_folder(self) -> Path:
        return default_model_dir(self.options.checkpoint, self.options.models_root)

    # -- lifecycle --------------------------------------------------------------------

    async def start(self) -> None:
        """Choose and load the backend. Raises :class:`DetectorStartError`."""
        if self._scorer is not None:
            return
        scorer, plan = await asyncio.to_thread(self._load)
        self._use(scorer)
        if plan is not None:
            from detectors.toxicity._background import BackgroundFetch

            self._fetch = BackgroundFetch(
                plan, self._load_detoxify, self._switch, self._fetch_failed
            )
            self._fetch.start()

    def _use(self, scorer: _Scorer) -> None:
        base = {"backend": scorer.backend, "checkpoint": scorer.checkpoint}
        self._meta = (
            MappingProxyType({**base, "truncated": False}),
            MappingProxyType({**base, "truncated": True}),
        )
        self._scorer = scorer

    def _load(self) -> tuple[_Scorer, FetchPlan | None]:
        opts = self.options
        if opts.backend in ("profanity", "bilstm"):
            return self._load_offline(opts.backend, reason=None), None
        if opts.model_dir is not None:
            folder_path = Path(opts.model_dir).expanduser()
            if not folder_path.exists():
                raise DetectorStartError(
                    f"toxicity option model_dir={opts.model_dir!r}: folder does not exist"
                )
        else:
            folder_path = self._default_folder()
            if not folder_path.exists():
                if opts.backend == "detoxify":
                    raise DetectorStartError(
                        "toxicity option backend='detoxify' needs a model folder, but "
                        f"model_dir is unset and {folder_path} does not exist; set model_dir "
                        "(or models_root), or write the folder with "
                        f"`railwatch models pull detoxify --checkpoint {opts.checkpoint}`"
                    )
                return self._offline_with_fetch(folder_path)
        folder = read_model_folder(folder_path)
        if "checkpoint" in opts.model_fields_set and folder.checkpoint != opts.checkpoint:
            raise DetectorStartError(
                f"toxicity option checkpoint={opts.checkpoint!r}, but model folder "
                f"{folder.path} holds {folder.checkpoint!r}"
            )
        missing = _torch_stack_missing()
        if missing is not None:
            if opts.backend == "detoxify":
                raise DetectorStartError(
                    f"toxicity backend 'detoxify' needs torch and transformers "
                    f"(pip install 'railwatch[models]'): {missing}"
                )
            return self._load_offline(opts.fallback, reason=missing), None
        return self._load_detoxify(folder), None

    def _offline_with_fetch(self, folder_path: Path) -> tuple[_Scorer, FetchPlan | None]:
        """``auto`` without a folder: the fallback now, and a fetch plan when allowed."""
        opts = self.options
        reason = f"no Detoxify model folder at {folder_path}"
        forbidden = downloads_forbidden(opts.download) or _torch_stack_missing()
        if forbidden is not None:
            return self._load_offline(
                opts.fallback, reason=f"{reason}, and it will not be fetched: {forbidden}"
            ), None
        scorer = self._load_offline(opts.fallback, reason=None)
        self._fallback_reason = f"{reason}; fetching Detoxify {opts.checkpoint!r} in the background"
        log.info(
            "toxicity detector %r: running on %s while Detoxify %r is fetched into %s "
            "(at most %g s; download: false or HF_HUB_OFFLINE=1 to forbid)",
            self.name,
            scorer.backend,
            opts.checkpoint,
            folder_path,
            opts.download_timeout_s,
        )
        plan = FetchPlan.for_checkpoint(
            opts.checkpoint,
            folder_path,
            checkpoint_url=opts.checkpoint_url,
            base_url=opts.base_url,
            connect_timeout_s=opts.connect_timeout_s,
            total_timeout_s=opts.download_timeout_s,
        )
        return scorer, plan

    def _load_detoxify(self, folder: ModelFolder) -> _Scorer:
        from detectors.toxicity._bilstm import restore_torch_threads
        from detectors.toxicity._transformer import TransformerScorer

        opts = self.options
        restore_torch_threads()
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

    def _load_offline(self, kind: str, *, reason: str | None) -> _Scorer:
        """Load ``bilstm`` or ``profanity``; a fallback BiLSTM that cannot load becomes profanity."""
        scorer: _Scorer
        if kind == "bilstm":
            from detectors.toxicity._bilstm import BiLstmScorer

            try:
                scorer = BiLstmScorer.load()
            except DetectorStartError as exc:
                if reason is None and self.options.backend == "bilstm":
                    raise
                reason = f"{reason or 'fallback bilstm'}; bilstm unavailable ({exc})"
                kind = "profanity"
        if kind == "profanity":
            from detectors.toxicity._profanity import ProfanityScorer

            scorer = ProfanityScorer.load()
        if reason is None:
            log.info("toxicity detector %r: backend %s", self.name, kind)
        else:
            self._fallback_reason = reason
            self._banner(kind, reason)
        return scorer

    def _banner(self, kind: str, reason: str) -> None:
        log.warning(
            "*** toxicity detector %r runs on the FALLBACK backend %s, not Detoxify: %s. "
            "For Detoxify: allow the download, or `railwatch models pull detoxify` ***",
            self.name,
            kind,
            reason,
        )

    def _switch(self, scorer: _Scorer) -> None:
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
        self._banner(kind, self._fallback_reason)

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
        return state


def _torch_stack_missing() -> str | None:
    """Why torch/transformers cannot be used here (text-free), or None."""
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as exc:
        return f"torch/transformers not installed ({exc})"
    return None

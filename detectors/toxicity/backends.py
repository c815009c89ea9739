"""Choose and load the toxicity detector's backend (see :mod:`detectors.toxicity.detector`).

:class:`BackendLoader` holds the rules: ``profanity`` and ``bilstm`` load directly;
Detoxify from a folder (``model_dir`` or ``<models_root>/detoxify-<checkpoint>``);
``auto`` without a folder loads the fallback and, when downloads are allowed, returns a
:class:`~detectors.toxicity.fetch.FetchPlan` for the background fetch. It blocks (model
loading) and raises :class:`DetectorStartError`; the warning banner is logged here.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

from detectors.errors import DetectorStartError
from detectors.toxicity.fetch import FetchPlan, downloads_forbidden
from detectors.toxicity.folder import ModelFolder, default_model_dir, read_model_folder
from detectors.toxicity.options import ToxicityOptions

log = logging.getLogger(__name__)


class Scorer(Protocol):
    """What every backend offers the detector."""

    backend: str  # "detoxify" | "bilstm" | "profanity"
    labels: tuple[str, ...]
    checkpoint: str
    device: str
    dtype: str
    inline_chars: int

    def score(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]: ...

    def close(self) -> None: ...


class BackendLoader:
    """Loads the backend of the detector ``name``; ``fallback_reason`` says why it fell back."""

    def __init__(self, name: str, options: ToxicityOptions) -> None:
        self.name = name
        self.options = options
        self.fallback_reason: str | None = None

    def load(self) -> tuple[Scorer, FetchPlan | None]:
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
            folder_path = default_model_dir(opts.checkpoint, opts.models_root)
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
        missing = torch_stack_missing()
        if missing is not None:
            if opts.backend == "detoxify":
                raise DetectorStartError(
                    f"toxicity backend 'detoxify' needs torch and transformers "
                    f"(pip install 'railwatch[models]'): {missing}"
                )
            return self._load_offline(opts.fallback, reason=missing), None
        return self.load_detoxify(folder), None

    def _offline_with_fetch(self, folder_path: Path) -> tuple[Scorer, FetchPlan | None]:
        """``auto`` without a folder: the fallback now, and a fetch plan when allowed."""
        opts = self.options
        reason = f"no Detoxify model folder at {folder_path}"
        forbidden = downloads_forbidden(opts.download) or torch_stack_missing()
        if forbidden is not None:
            return self._load_offline(
                opts.fallback, reason=f"{reason}, and it will not be fetched: {forbidden}"
            ), None
        scorer = self._load_offline(opts.fallback, reason=None)
        self.fallback_reason = f"{reason}; fetching Detoxify {opts.checkpoint!r} in the background"
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

    def load_detoxify(self, folder: ModelFolder) -> Scorer:
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

    def _load_offline(self, kind: str, *, reason: str | None) -> Scorer:
        """Load ``bilstm`` or ``profanity``; a fallback BiLSTM that cannot load becomes profanity."""
        scorer: Scorer
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
            self.fallback_reason = reason
            self.banner(kind, reason)
        return scorer

    def banner(self, kind: str, reason: str) -> None:
        log.warning(
            "*** toxicity detector %r runs on the FALLBACK backend %s, not Detoxify: %s. "
            "Detoxify needs its model folder: allow the one-time download, or write the "
            "folder with `railwatch models pull detoxify` ***",
            self.name,
            kind,
            reason,
        )


def torch_stack_missing() -> str | None:
    """Why torch/transformers cannot be used here (text-free), or None. Imports nothing."""
    for module in ("torch", "transformers"):
        if importlib.util.find_spec(module) is None:
            return f"torch/transformers not installed ({module} cannot be imported)"
    return None

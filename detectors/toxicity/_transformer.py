"""The Detoxify scorer: a sequence-classification transformer loaded from a model folder.

Loads with ``transformers`` from a folder checked by :func:`.folder.read_model_folder`,
with ``local_files_only=True`` and the hub's offline switches set during the load, so
it never opens a connection. Scores are ``sigmoid(logits)`` of the first
``len(labels)`` outputs, which is what ``detoxify.Detoxify.predict`` computes.

Inference (``score``):

- tokenizes the whole batch at once with the Rust fast tokenizer (a private copy set
  to truncate at ``max_length`` tokens with overlapping overflow windows, never to pad);
- a text longer than ``max_length`` tokens is scored on up to ``max_windows`` windows
  (``max_length`` tokens each, overlapping by ``max_length // 8``) and each label takes
  its maximum over the windows; text past the last window is not scored and the text
  is flagged ``truncated``;
- sorts the windows by token count and runs them ``batch_size`` at a time, each batch
  padded only to its own longest window (a multiple of 8 on CUDA), so padding stays
  small; ids and mask travel in one pinned host buffer per batch on CUDA (an
  asynchronous copy, so building the next batch overlaps the GPU's work); results are
  gathered on the device and copied back once. Tokenisation runs outside the lock, so
  with the runner's ``concurrency: 2`` one thread tokenises while the other's batch runs.

It blocks (CPU or GPU work) and is thread-safe: forward passes are serialized by a lock.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from detectors.errors import DetectorStartError
from detectors.toxicity.folder import ModelFolder

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

_OFFLINE_ENV = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
_DTYPES = {"float32": "float32", "float16": "float16", "bfloat16": "bfloat16"}
# Keys a checkpoint from an older transformers may carry that current models rebuild.
_HARMLESS_UNEXPECTED = ("position_ids",)


@contextlib.contextmanager
def offline_hub() -> Iterator[None]:
    """Set ``HF_HUB_OFFLINE``/``TRANSFORMERS_OFFLINE`` while loading, then restore them.

    huggingface_hub reads these once, at its first import: they only bite if the load is
    what imports it. The guarantee against network use is ``local_files_only=True`` on a
    local folder; this is a second lock on the same door.
    """
    saved = {name: os.environ.get(name) for name in _OFFLINE_ENV}
    for name in _OFFLINE_ENV:
        os.environ[name] = "1"
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` when available, else ``cpu``; a CUDA device that is not there fails."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError) as exc:
        raise DetectorStartError(
            f"toxicity option device={device!r} is not a torch device"
        ) from exc
    if parsed.type == "cuda" and not torch.cuda.is_available():
        raise DetectorStartError(
            f"toxicity option device={device!r}, but CUDA is not available here "
            "(use device: auto to fall back to cpu)"
        )
    return device


def resolve_dtype(dtype: str, device: str) -> str:
    """``auto`` -> ``float16`` on CUDA (10 mantissa bits: closer to fp32 scores than bf16), else ``float32``."""
    if dtype == "auto":
        return "float16" if device.startswith("cuda") else "float32"
    return _DTYPES[dtype]


class TransformerScorer:
    """A loaded Detoxify-style classifier; see the module docstring for how it scores."""

    backend = "detoxify"
    inline_chars = 0  # never on the event loop

    def __init__(
        self,
        *,
        model: Any,
        tokenizer: Any,
        pad_id: int,
        folder: ModelFolder,
        device: str,
        dtype: str,
        max_length: int,
        batch_size: int,
        max_windows: int,
    ) -> None:
        self._model = model
        self._tokenizer = tokenizer
        self._pad_id = pad_id
        self._lock = threading.Lock()
        self.folder = folder
        self.labels: tuple[str, ...] = folder.labels
        self.checkpoint = folder.checkpoint
        self.device = device
        self.dtype = dtype
        self.max_length = max_length
        self.batch_size = batch_size
        self.max_windows = max_windows

    @classmethod
    def load(
        cls,
        folder: ModelFolder,
        *,
        device: str = "auto",
        dtype: str = "auto",
        max_length: int = 256,
        batch_size: int = 64,
        max_windows: int = 4,
    ) -> TransformerScorer:
        """Load model and tokenizer from ``folder``; raises :class:`DetectorStartError`.

        Blocks for seconds (imports torch and transformers, reads the weights).
        """
        with offline_hub():
            try:
                import torch
                import transformers
                from tokenizers import Tokenizer
                from transformers.utils import logging as hf_logging
            except ImportError as exc:
                raise DetectorStartError(
                    f"toxicity backend 'detoxify' needs torch and transformers "
                    f"(pip install 'railwatch[models]'): {exc}"
                ) from exc
            device = resolve_device(device)
            dtype = resolve_dtype(dtype, device)
            bars = hf_logging.is_progress_bar_enabled()
            hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
            try:
                model, info = transformers.AutoModelForSequenceClassification.from_pretrained(
                    folder.path,
                    local_files_only=True,
                    output_loading_info=True,
                    dtype=torch.float32,
                )
                hf_tok = transformers.AutoTokenizer.from_pretrained(
                    folder.path, local_files_only=True
                )
            except Exception as exc:
                raise DetectorStartError(
                    f"cannot load toxicity model folder {folder.path}: {type(exc).__name__}: {exc}"
                ) from exc
            finally:
                if bars:
                    hf_logging.enable_progress_bar()  # type: ignore[no-untyped-call]
        cls._check_loaded(folder, model, info, hf_tok, max_length)
        tokenizer = Tokenizer.from_str(hf_tok.backend_tokenizer.to_str())
        tokenizer.no_padding()
        tokenizer.enable_truncation(max_length, stride=max_length // 8)
        try:
            model.to(device=device, dtype=getattr(torch, dtype))
        except (RuntimeError, ValueError) as exc:
            raise DetectorStartError(
                f"cannot move the toxicity model to {device} as {dtype}: {exc}"
            ) from exc
        model.eval()
        scorer = cls(
            model=model,
            tokenizer=tokenizer,
            pad_id=int(hf_tok.pad_token_id),
            folder=folder,
            device=device,
            dtype=dtype,
            max_length=max_length,
            batch_size=batch_size,
            max_windows=max_windows,
        )
        # One pass now: CUDA/BLAS initialise here rather than on the first request, and a
        # model that cannot run on this device/dtype fails start-up, not traffic.
        try:
            scorer.score(["warm-up"])
        except (RuntimeError, ValueError, TypeError) as exc:
            raise DetectorStartError(
                f"toxicity model from {folder.path} fails a test pass on {device} ({dtype}): "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        return scorer

    @staticmethod
    def _check_loaded(
        folder: ModelFolder, model: Any, info: dict[str, Any], hf_tok: Any, max_length: int
    ) -> None:
        where = f"toxicity model folder {folder.path}"
        manifest = folder.manifest
        missing = sorted(info.get("missing_keys") or ())
        mismatched = list(info.get("mismatched_keys") or ())
        if missing or mismatched:
            raise DetectorStartError(
                f"{where}: weights do not match its config.json "
                f"(missing {missing[:5]}, mismatched {[str(m) for m in mismatched[:5]]})"
            )
        unexpected = [
            k for k in info.get("unexpected_keys") or () if not k.endswith(_HARMLESS_UNEXPECTED)
        ]
        if unexpected:
            raise DetectorStartError(
                f"{where}: weights have unknown tensors {sorted(unexpected)[:5]}"
            )
        num_labels = int(model.config.num_labels)
        if num_labels != manifest.num_outputs:
            raise DetectorStartError(
                f"{where}: config.json has {num_labels} outputs, "
                f"{folder.path.name}/railwatch-model.json says {manifest.num_outputs}"
            )
        if getattr(hf_tok, "backend_tokenizer", None) is None or hf_tok.pad_token_id is None:
            raise DetectorStartError(f"{where}: tokenizer is not a fast tokenizer with a pad token")
        vocab = len(hf_tok)
        # A tokenizer rebuilt from a bare vocab file can come out with a handful of tokens
        # and still "work": refuse anything that does not fill the embedding matrix's range.
        if vocab < 1000 or vocab > int(model.config.vocab_size) + 1000:
            raise DetectorStartError(
                f"{where}: tokenizer has {vocab} tokens for a model with "
                f"{model.config.vocab_size} embeddings"
            )
        limit = int(model.config.max_position_embeddings)
        if model.config.model_type in ("roberta", "xlm-roberta"):
            limit -= 2  # positions start after the padding index
        if max_length > limit:
            raise DetectorStartError(
                f"toxicity option max_length={max_length} exceeds the model's {limit} positions"
            )

    def score(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Return ``(scores (n, len(labels)) float32 in [0, 1], truncated (n,) bool)``."""
        n = len(texts)
        out = np.zeros((n, len(self.labels)), dtype=np.float32)
        truncated = np.zeros(n, dtype=bool)
        if n == 0:
            return out, truncated
        owners: list[int] = []
        windows: list[list[int]] = []
        for i, enc in enumerate(self._tokenizer.encode_batch(list(texts))):
            owners.append(i)
            windows.append(enc.ids)
            extra = enc.overflowing
            if extra:
                keep = extra[: self.max_windows - 1]
                truncated[i] = len(extra) > len(keep)
                for window in keep:
                    owners.append(i)
                    windows.append(window.ids)
        probs = self._forward(windows)
        np.maximum.at(out, np.asarray(owners), probs)
        return out, truncated

    def _forward(self, windows: list[list[int]]) -> np.ndarray:
        import torch

        order = sorted(range(len(windows)), key=lambda k: len(windows[k]))
        on_cuda = self.device.startswith("cuda")
        multiple = 8 if on_cuda else 1
        num_labels = len(self.labels)
        parts: list[torch.Tensor] = []
        with self._lock, torch.inference_mode():
            for start in range(0, len(order), self.batch_size):
                chunk = order[start : start + self.batch_size]
                longest = len(windows[chunk[-1]])
                width = -(-longest // multiple) * multiple
                # On CUDA the host buffers are pinned (torch caches pinned blocks), so the
                # copies below are truly asynchronous: the next batch is built on the CPU
                # while this one runs on the GPU.
                host = torch.empty((2, len(chunk), width), dtype=torch.int64, pin_memory=on_cuda)
                buf = host.numpy()
                buf[0].fill(self._pad_id)
                buf[1].fill(0)
                for row, k in enumerate(chunk):
                    seq = windows[k]
                    buf[0, row, : len(seq)] = seq
                    buf[1, row, : len(seq)] = 1
                both = host.to(self.device, non_blocking=True)
                logits = self._model(input_ids=both[0], attention_mask=both[1]).logits
                parts.append(torch.sigmoid(logits[:, :num_labels].float()))
            sorted_probs = torch.cat(parts).cpu().numpy()
        probs = np.empty_like(sorted_probs)
        probs[np.asarray(order)] = sorted_probs
        return probs

    def close(self) -> None:
        """Drop the model; frees GPU memory held by the cache. Never raises."""
        on_cuda = self.device.startswith("cuda")
        self._model = None
        self._tokenizer = None
        if on_cuda:
            try:
                import torch

                torch.cuda.empty_cache()
            except Exception:
                log.debug("torch.cuda.empty_cache failed", exc_info=True)

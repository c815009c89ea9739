"""Policy options of the toxicity detector, validated from the policy file."""

from __future__ import annotations

from typing import Literal

import pydantic


class ToxicityOptions(pydantic.BaseModel):
    """Policy options of the toxicity detector (see :mod:`detectors.toxicity.detector`)."""

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
    memo_entries: int = pydantic.Field(default=4096, ge=0, le=1_000_000)
    """Recent prompt texts (128 characters or more, input stage) whose scores are kept,
    keyed by a hash of the text: conversation history re-sent every turn and repeated
    system prompts are scored once. 0: off."""
    inline_chars: int | None = pydantic.Field(default=None, ge=0)
    """Batches up to this many characters run in the caller (None: the backend's default)."""

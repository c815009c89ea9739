"""Fetch Detoxify's weights on first use, bounded in time, checked, cached (``backend: auto``).

What ``Detoxify('original')`` does, made safe for a server: the checkpoint file comes from
Detoxify's release URL (a file Detoxify itself already downloaded into torch hub's cache,
``$TORCH_HOME/hub/checkpoints`` or ``~/.cache/torch/hub/checkpoints``, is reused), its SHA-256 must start with the prefix in its file name (Detoxify's own naming,
the check ``torch.hub`` makes); the base model's config and tokenizer files come from the
Hugging Face hub; then :func:`.pull.build_folder_from_checkpoint` writes the model folder
where the detector looks (``<models_root>/detoxify-<checkpoint>``) and later starts load
it with no network at all.

Never fetched when forbidden: ``HF_HUB_OFFLINE`` or ``TRANSFORMERS_OFFLINE`` set to a true
value, ``RAILWATCH_MODEL_DOWNLOADS=0``, or the detector option ``download: false``
(:func:`downloads_forbidden`). Bounded: every socket operation has ``connect_timeout_s``,
the whole fetch ``total_timeout_s``, and each file a size cap; ``stop`` aborts between
chunks. Progress is logged every 10%. Everything here blocks (call it from a thread) and
raises :class:`FetchError` whose ``code`` is one of ``forbidden``, ``unreachable``,
``timeout``, ``http``, ``checksum``, ``too_large``, ``stopped``, ``build``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from detectors.errors import DetectorError

log = logging.getLogger(__name__)

DOWNLOADS_ENV = "RAILWATCH_MODEL_DOWNLOADS"
_OFFLINE_ENV = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
_TRUE = {"1", "true", "yes", "on"}
_CHUNK = 1 << 20

#: Detoxify 0.5's release files (``detoxify.detoxify.MODEL_URLS``), so fetching needs no detoxify import.
CHECKPOINT_URLS = {
    "original": "https://github.com/unitaryai/detoxify/releases/download/v0.1-alpha/toxic_original-c1212f89.ckpt",
    "unbiased": "https://github.com/unitaryai/detoxify/releases/download/v0.3-alpha/toxic_debiased-c7548aa0.ckpt",
    "multilingual": "https://github.com/unitaryai/detoxify/releases/download/v0.4-alpha/multilingual_debiased-0b549669.ckpt",
}
HUB_URL = "https://huggingface.co/{repo}/resolve/main"
#: checkpoint -> (the hub model its config and tokenizer come from, files needed).
BASES = {
    "original": (
        "bert-base-uncased",
        ("config.json", "tokenizer.json", "tokenizer_config.json", "vocab.txt"),
    ),
    "unbiased": ("roberta-base", ("config.json", "tokenizer.json", "vocab.json", "merges.txt")),
    "multilingual": (
        "xlm-roberta-base",
        ("config.json", "tokenizer.json", "sentencepiece.bpe.model"),
    ),
}
MAX_CHECKPOINT_BYTES = 3 << 30
MAX_BASE_FILE_BYTES = 64 << 20


class FetchError(DetectorError):
    """A fetch that did not happen or failed; ``code`` says which way (see the module docstring)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class FetchPlan:
    """Where one Detoxify checkpoint comes from and the limits of fetching it."""

    checkpoint: str
    dest: Path
    checkpoint_url: str
    base_url: str  # folder URL holding the BASES files
    base_files: tuple[str, ...]
    connect_timeout_s: float = 10.0
    total_timeout_s: float = 900.0
    cache_dir: Path = field(default_factory=lambda: torch_hub_checkpoints_dir())

    @classmethod
    def for_checkpoint(
        cls,
        checkpoint: str,
        dest: Path,
        *,
        checkpoint_url: str | None = None,
        base_url: str | None = None,
        connect_timeout_s: float = 10.0,
        total_timeout_s: float = 900.0,
    ) -> FetchPlan:
        """The plan for one of :data:`CHECKPOINT_URLS`, with optional mirror URLs."""
        repo, files = BASES[checkpoint]
        return cls(
            checkpoint,
            dest,
            checkpoint_url or CHECKPOINT_URLS[checkpoint],
            (base_url or HUB_URL.format(repo=repo)).rstrip("/"),
            files,
            connect_timeout_s,
            total_timeout_s,
        )


def downloads_forbidden(allowed_by_option: bool) -> str | None:
    """Why a download must not happen (a text-free reason), or None when it may."""
    if not allowed_by_option:
        return "the toxicity option download is false"
    for name in _OFFLINE_ENV:
        if os.environ.get(name, "").strip().lower() in _TRUE:
            return f"{name} is set"
    if os.environ.get(DOWNLOADS_ENV, "").strip().lower() in {"0", "false", "no", "off"}:
        return f"{DOWNLOADS_ENV}={os.environ[DOWNLOADS_ENV]}"
    return None


def torch_hub_checkpoints_dir() -> Path:
    """torch hub's checkpoint cache, computed like ``torch.hub.get_dir`` (without torch)."""
    home = os.environ.get("TORCH_HOME")
    if not home:
        xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        home = str(Path(xdg) / "torch")
    return Path(home).expanduser() / "hub" / "checkpoints"


def fetch_detoxify(plan: FetchPlan, *, stop: threading.Event | None = None) -> Path:
    """Fetch ``plan``'s checkpoint and base files, write the model folder; return its path.

    Blocks (minutes for a real checkpoint). Raises :class:`FetchError`.
    """
    stop = stop or threading.Event()
    deadline = time.monotonic() + plan.total_timeout_s
    name = plan.checkpoint_url.rsplit("/", 1)[-1]
    match = re.search(r"-([0-9a-f]{6,64})\.ckpt$", name)
    if match is None:
        raise FetchError("checksum", f"{name}: no SHA-256 prefix in the file name to check against")
    prefix = match.group(1)
    cached = plan.cache_dir / name
    plan.dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".railwatch-fetch-", dir=plan.dest.parent) as tmp:
        if cached.is_file() and _sha256(cached).startswith(prefix):
            log.info("toxicity fetch: reusing Detoxify's cached checkpoint %s", cached)
            ckpt = cached
        else:
            ckpt = Path(tmp) / name
            download(
                plan.checkpoint_url,
                ckpt,
                plan,
                deadline,
                stop,
                sha256_prefix=prefix,
                max_bytes=MAX_CHECKPOINT_BYTES,
            )
        base = Path(tmp) / "base"
        base.mkdir()
        for file in plan.base_files:
            download(
                f"{plan.base_url}/{file}",
                base / file,
                plan,
                deadline,
                stop,
                sha256_prefix=None,
                max_bytes=MAX_BASE_FILE_BYTES,
            )
        from detectors.toxicity.pull import build_folder_from_checkpoint

        try:
            return build_folder_from_checkpoint(
                ckpt,
                plan.dest,
                base=base,
                checkpoint=plan.checkpoint,
                overwrite=True,
                source=plan.checkpoint_url,
            )
        except DetectorError as exc:
            raise FetchError("build", str(exc)) from exc


def download(
    url: str,
    dest: Path,
    plan: FetchPlan,
    deadline: float,
    stop: threading.Event,
    *,
    sha256_prefix: str | None,
    max_bytes: int,
) -> None:
    """Stream ``url`` into ``dest`` (via a temporary sibling, renamed when complete and checked)."""
    if not url.startswith(("https://", "http://")):
        raise FetchError("http", f"refusing to fetch {url!r}: not an http(s) URL")
    left = deadline - time.monotonic()
    if left <= 0:
        raise FetchError("timeout", f"fetch ran past its {plan.total_timeout_s:g} s limit")
    digest = hashlib.sha256()
    part = dest.with_name(f".{dest.name}.part")
    try:
        with urllib.request.urlopen(url, timeout=min(plan.connect_timeout_s, left)) as resp:
            total = int(resp.headers.get("Content-Length") or 0)
            if total > max_bytes:
                raise FetchError("too_large", f"{url} is {total} bytes (limit {max_bytes})")
            done, next_log = 0, 0.1
            with part.open("wb") as out:
                while block := resp.read1(_CHUNK):
                    if stop.is_set():
                        raise FetchError("stopped", "fetch stopped (detector closed)")
                    if time.monotonic() > deadline:
                        raise FetchError(
                            "timeout", f"fetch ran past its {plan.total_timeout_s:g} s limit"
                        )
                    done += len(block)
                    if done > max_bytes:
                        raise FetchError("too_large", f"{url} exceeds {max_bytes} bytes")
                    digest.update(block)
                    out.write(block)
                    if total and done / total >= next_log:
                        log.info(
                            "toxicity fetch: %s %.0f%% (%d of %d MB)",
                            dest.name,
                            100 * done / total,
                            done >> 20,
                            total >> 20,
                        )
                        next_log += 0.1
        if total and done != total:
            raise FetchError("http", f"{url}: got {done} of {total} bytes")
        if sha256_prefix is not None and not digest.hexdigest().startswith(sha256_prefix):
            raise FetchError(
                "checksum",
                f"{url}: SHA-256 {digest.hexdigest()[:16]}... does not start with {sha256_prefix}",
            )
        part.replace(dest)
    except FetchError:
        raise
    except urllib.error.HTTPError as exc:
        raise FetchError("http", f"{url}: HTTP {exc.code}") from exc
    except (TimeoutError, urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        code = (
            "timeout"
            if isinstance(reason, TimeoutError) or "timed out" in str(reason)
            else "unreachable"
        )
        raise FetchError(code, f"{url}: {type(reason).__name__}: {reason}") from exc
    finally:
        part.unlink(missing_ok=True)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()

"""Write self-contained Detoxify model folders (behind ``railwatch models pull detoxify``).

Two entry points, both writing the layout of :mod:`detectors.toxicity.folder` to
``dest`` (the model folder itself, e.g. ``default_model_dir("original")``):

- :func:`pull_detoxify` downloads a checkpoint from Detoxify's release URLs (checking
  the SHA-256 prefix in its file name), fetches the base model's config and tokenizer
  from the Hugging Face hub, and builds the folder. Needs network.
- :func:`build_folder_from_checkpoint` does the same from a checkpoint file already on
  disk, with the config and tokenizer from the hub or from a local folder (``base``):
  with a local ``base`` it needs no network at all, which is how a checkpoint carried
  into an air-gapped machine becomes a folder.

The folder is built in a temporary sibling of ``dest`` and renamed into place, so a
failed pull never leaves a half-written folder where the detector looks. Both block
(downloads, torch) and raise :class:`detectors.errors.DetectorError` with a message that
says what failed and what to do; they need the ``models`` extra (torch, transformers,
detoxify for the URLs).
"""

from __future__ import annotations

import hashlib
import logging
import pickle
import re
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from detectors.errors import DetectorError
from detectors.toxicity.folder import (
    FORMAT,
    FORMAT_VERSION,
    MANIFEST,
    Manifest,
    default_model_dir,
    read_model_folder,
    write_manifest,
)

__all__ = ["CHECKPOINTS", "build_folder_from_checkpoint", "default_model_dir", "pull_detoxify"]

log = logging.getLogger(__name__)

CHECKPOINTS = ("original", "unbiased", "multilingual")
# detoxify.load_checkpoint renames these so all checkpoints share label names.
_RENAME = {
    "toxic": "toxicity",
    "identity_hate": "identity_attack",
    "severe_toxic": "severe_toxicity",
}
_HARMLESS_UNEXPECTED = ("position_ids",)


def _model_urls() -> Mapping[str, str]:
    try:
        from detoxify.detoxify import MODEL_URLS
    except ImportError as exc:
        raise DetectorError(
            f"pulling Detoxify needs the detoxify package (pip install 'railwatch[models]'): {exc}"
        ) from exc
    return dict(MODEL_URLS)


def pull_detoxify(
    checkpoint: str, dest: Path, *, overwrite: bool = False, progress: bool = False
) -> Path:
    """Download Detoxify ``checkpoint`` and write its model folder at ``dest``; return it.

    Blocks for minutes (hundreds of MB). Raises :class:`DetectorError` on an unknown
    checkpoint, an occupied ``dest`` (unless ``overwrite``), no network, or a download
    whose hash does not match.
    """
    if checkpoint not in CHECKPOINTS:
        raise DetectorError(f"unknown Detoxify checkpoint {checkpoint!r}; one of {CHECKPOINTS}")
    dest = _check_dest(dest, overwrite)
    url = _model_urls()[checkpoint]
    file_name = url.rsplit("/", 1)[-1]
    match = re.search(r"-([0-9a-f]{6,})\.ckpt$", file_name)
    import torch

    with tempfile.TemporaryDirectory(prefix=".railwatch-pull-", dir=dest.parent) as tmp:
        ckpt = Path(tmp) / file_name
        log.info("downloading Detoxify checkpoint %s from %s", checkpoint, url)
        try:
            torch.hub.download_url_to_file(
                url, str(ckpt), hash_prefix=match.group(1) if match else None, progress=progress
            )
        except (OSError, RuntimeError) as exc:  # URLError is an OSError; hash mismatch RuntimeError
            raise DetectorError(
                f"could not download Detoxify checkpoint {checkpoint!r} from {url}: "
                f"{str(exc).rstrip('.')}. "
                "Without network here: fetch that file on a machine with network, copy it "
                "over, and build the folder with build_folder_from_checkpoint "
                "(base=a local folder holding the base model's config and tokenizer)"
            ) from exc
        return build_folder_from_checkpoint(
            ckpt, dest, checkpoint=checkpoint, overwrite=overwrite, source=url
        )


def build_folder_from_checkpoint(
    ckpt_path: str | Path,
    dest: str | Path,
    *,
    base: str | Path | None = None,
    checkpoint: str | None = None,
    overwrite: bool = False,
    source: str | None = None,
) -> Path:
    """Turn a Detoxify checkpoint file into a model folder at ``dest``; return it.

    ``ckpt_path``: a ``torch.save``'d dict with ``config`` (``arch.args``: ``model_type``,
    ``model_name``, ``num_classes``, optionally ``tokenizer_name``;
    ``dataset.args.classes``) and ``state_dict``, as Detoxify releases them.
    ``base``: where the config and tokenizer come from (default: the checkpoint's
    ``model_type``, e.g. ``bert-base-uncased``, from the hub; a local folder needs no
    network). ``checkpoint``: the name recorded in the manifest (default: guessed from
    the file name against Detoxify's release files, else ``"custom"``).

    Raises :class:`DetectorError` when the file is not such a checkpoint, its weights do
    not fit the architecture, the base cannot be fetched, or ``dest`` is occupied.
    """
    import torch
    import transformers

    ckpt_path = Path(ckpt_path).expanduser()
    dest = _check_dest(Path(dest), overwrite)
    loaded = _load_checkpoint(ckpt_path, torch)
    arch, labels = _parse_config(loaded, ckpt_path)
    model_name = arch["model_name"]
    model_class = getattr(transformers, model_name, None)
    if model_class is None or not model_name.endswith("ForSequenceClassification"):
        raise DetectorError(
            f"{ckpt_path}: architecture {model_name!r} is not a transformers classifier"
        )
    num_outputs = int(arch["num_classes"])
    if len(labels) > num_outputs:
        raise DetectorError(f"{ckpt_path}: {len(labels)} classes for {num_outputs} outputs")
    base_ref = str(base if base is not None else arch["model_type"])
    config, tokenizer = _fetch_base(transformers, model_class, arch, base_ref, num_outputs)
    config.id2label = {
        i: labels[i] if i < len(labels) else f"output_{i}" for i in range(num_outputs)
    }
    config.label2id = {v: k for k, v in config.id2label.items()}
    config.problem_type = "multi_label_classification"

    model = model_class(config)
    state_dict = _strip_prefix(loaded["state_dict"])
    try:
        result = model.load_state_dict(state_dict, strict=False)
    except RuntimeError as exc:  # size mismatches
        raise DetectorError(
            f"{ckpt_path}: weights do not fit {model_name} from {base_ref}: {exc}"
        ) from exc
    unexpected = [k for k in result.unexpected_keys if not k.endswith(_HARMLESS_UNEXPECTED)]
    if result.missing_keys or unexpected:
        raise DetectorError(
            f"{ckpt_path}: weights do not fit {model_name} from {base_ref} "
            f"(missing {sorted(result.missing_keys)[:5]}, unexpected {sorted(unexpected)[:5]})"
        )

    if checkpoint is None:
        checkpoint = _guess_checkpoint(ckpt_path.name)
    manifest = Manifest(
        format=FORMAT,
        format_version=FORMAT_VERSION,
        checkpoint=checkpoint,
        labels=tuple(labels),
        num_outputs=num_outputs,
        architecture=model_name,
        base_model=str(arch["model_type"]) if base is None else base_ref,
        source=source or ckpt_path.name,
        source_sha256=_sha256(ckpt_path),
    )
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        write_manifest(tmp, manifest)
        read_model_folder(tmp)  # the same check the detector makes
        if dest.exists():
            shutil.rmtree(dest)
        tmp.rename(dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("wrote Detoxify model folder %s (%s, %d labels)", dest, checkpoint, len(labels))
    return dest


def _check_dest(dest: Path, overwrite: bool) -> Path:
    dest = dest.expanduser().resolve()
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        if not overwrite:
            raise DetectorError(f"{dest} exists and is not empty (pass overwrite to replace it)")
        if not (dest / MANIFEST).is_file():
            raise DetectorError(f"{dest} is not a railwatch model folder; refusing to replace it")
    dest.parent.mkdir(parents=True, exist_ok=True)
    return dest


def _load_checkpoint(path: Path, torch: Any) -> Mapping[str, Any]:
    if not path.is_file():
        raise DetectorError(f"checkpoint file {path} does not exist")
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        # Detoxify itself loads with full unpickling; we only do so when the safe loader
        # refuses, and say so: such a file can run code, so it must come from a trusted source.
        log.warning(
            "checkpoint %s holds more than tensors and plain data; fully unpickling it", path
        )
        try:
            loaded = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as exc:
            raise DetectorError(f"{path} is not a readable torch checkpoint: {exc}") from exc
    except Exception as exc:
        raise DetectorError(f"{path} is not a readable torch checkpoint: {exc}") from exc
    if not isinstance(loaded, Mapping) or "config" not in loaded or "state_dict" not in loaded:
        raise DetectorError(
            f"{path} is not a Detoxify checkpoint (needs 'config' and 'state_dict')"
        )
    return loaded


def _parse_config(loaded: Mapping[str, Any], path: Path) -> tuple[Mapping[str, Any], list[str]]:
    try:
        arch = loaded["config"]["arch"]["args"]
        classes = loaded["config"]["dataset"]["args"]["classes"]
    except (KeyError, TypeError) as exc:
        raise DetectorError(
            f"{path}: Detoxify config lacks {exc} (arch.args / dataset.args)"
        ) from exc
    absent = [k for k in ("model_type", "model_name", "num_classes") if k not in arch]
    if absent:
        raise DetectorError(f"{path}: Detoxify config arch.args lacks {absent}")
    if not isinstance(classes, list) or not classes or not all(isinstance(c, str) for c in classes):
        raise DetectorError(f"{path}: dataset.args.classes is not a list of names")
    return arch, [_RENAME.get(c) or c for c in classes]


def _fetch_base(
    transformers: Any, model_class: Any, arch: Mapping[str, Any], base: str, num_outputs: int
) -> tuple[Any, Any]:
    local = Path(base).expanduser().is_dir()
    tok_class = getattr(transformers, str(arch.get("tokenizer_name") or ""), None)
    tok_class = tok_class if tok_class is not None else transformers.AutoTokenizer
    try:
        config = model_class.config_class.from_pretrained(
            base, num_labels=num_outputs, local_files_only=local
        )
        tokenizer = tok_class.from_pretrained(base, local_files_only=local)
    except Exception as exc:
        where = "local folder" if local else "Hugging Face hub model"
        raise DetectorError(
            f"could not load the config and tokenizer of {where} {base!r}: "
            f"{type(exc).__name__}: {str(exc).rstrip('.')}. Without network, pass base= a local folder "
            "holding that model's config.json and tokenizer files"
        ) from exc
    if getattr(tokenizer, "backend_tokenizer", None) is None:
        raise DetectorError(f"{base!r} has no fast tokenizer (tokenizer.json) to write")
    return config, tokenizer


def _strip_prefix(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """Drop a Lightning-style ``model.`` prefix when every key carries it."""
    keys = list(state_dict)
    if keys and all(k.startswith("model.") for k in keys):
        return {k[len("model.") :]: v for k, v in state_dict.items()}
    return dict(state_dict)


def _guess_checkpoint(file_name: str) -> str:
    try:
        urls = _model_urls()
    except DetectorError:
        return "custom"
    for name, url in urls.items():
        if url.rsplit("/", 1)[-1] == file_name:
            return name
    return "custom"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()

"""The self-contained Detoxify model folder: its layout, where it is looked for, how it is read.

``railwatch models pull detoxify`` (:mod:`detectors.toxicity.pull`) writes one such folder
per checkpoint; :class:`~detectors.toxicity.ToxicityDetector` loads only from one. The
folder is a plain Hugging Face ``transformers`` folder plus a small manifest, so nothing
in it points anywhere else and loading it needs no network::

    detoxify-original/
        railwatch-model.json    manifest (below)
        config.json             transformers config; num_labels = every model output
        model.safetensors       the weights (the checkpoint's state_dict, safetensors)
        tokenizer.json          fast tokenizer (plus tokenizer_config.json and friends)

The manifest keeps what Detoxify's checkpoint ``config`` said and transformers does not
know: the label names in output order (Detoxify's names: ``toxicity``, ``severe_toxicity``,
``obscene``, ``threat``, ``insult``, ``identity_attack``, ``sexual_explicit``) and where it
came from. A model may have more outputs than labels (the ``unbiased`` checkpoint has 16
outputs: 7 labels, then 9 identity sub-groups that Detoxify never reports); only the first
``len(labels)`` outputs are scores.

Reading a folder only parses JSON and checks that files exist (no torch import); it
raises :class:`detectors.errors.DetectorStartError` with the folder and the problem.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import pydantic

from detectors.errors import DetectorStartError

MANIFEST = "railwatch-model.json"
FORMAT = "railwatch-detoxify"
FORMAT_VERSION = 1
WEIGHTS = "model.safetensors"
REQUIRED_FILES = ("config.json", WEIGHTS, "tokenizer.json")

#: Environment variable naming the folder that holds ``detoxify-<checkpoint>`` folders.
MODELS_DIR_ENV = "RAILWATCH_MODELS_DIR"


class Manifest(pydantic.BaseModel):
    """Contents of ``railwatch-model.json`` (unknown keys are kept out, not refused)."""

    model_config = pydantic.ConfigDict(extra="ignore", frozen=True)

    format: str
    format_version: int
    checkpoint: str  # "original", "unbiased", "multilingual", or "custom"
    labels: tuple[str, ...] = pydantic.Field(min_length=1)
    num_outputs: int = pydantic.Field(ge=1)
    architecture: str  # transformers class, e.g. "BertForSequenceClassification"
    base_model: str  # what the config and tokenizer came from, e.g. "bert-base-uncased"
    source: str = ""  # checkpoint file name or URL it was built from
    source_sha256: str = ""

    @pydantic.model_validator(mode="after")
    def _labels_fit(self) -> Manifest:
        if len(self.labels) > self.num_outputs:
            raise ValueError(
                f"{len(self.labels)} labels for a model with {self.num_outputs} outputs"
            )
        if len(set(self.labels)) != len(self.labels):
            raise ValueError("labels are not unique")
        return self


@dataclass(frozen=True, slots=True)
class ModelFolder:
    """A checked model folder: where it is and what its manifest says."""

    path: Path
    manifest: Manifest

    @property
    def labels(self) -> tuple[str, ...]:
        return self.manifest.labels

    @property
    def checkpoint(self) -> str:
        return self.manifest.checkpoint


def default_models_root() -> Path:
    """``$RAILWATCH_MODELS_DIR``, else ``~/.cache/railwatch/models``."""
    env = os.environ.get(MODELS_DIR_ENV)
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "railwatch" / "models"


def default_model_dir(checkpoint: str, models_root: str | Path | None = None) -> Path:
    """Where the folder of Detoxify ``checkpoint`` is looked for: ``<root>/detoxify-<checkpoint>``."""
    root = Path(models_root).expanduser() if models_root else default_models_root()
    return root / f"detoxify-{checkpoint}"


def read_model_folder(path: str | Path) -> ModelFolder:
    """Check that ``path`` is a complete model folder and return it.

    Raises :class:`DetectorStartError` naming the folder and what is wrong (not a
    directory, no manifest, manifest unreadable or of another format, a file missing).
    """
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise DetectorStartError(f"toxicity model folder {folder} does not exist")
    manifest_path = folder / MANIFEST
    if not manifest_path.is_file():
        raise DetectorStartError(
            f"{folder} is not a railwatch model folder: no {MANIFEST} "
            "(write one with `railwatch models pull detoxify`)"
        )
    try:
        raw = json.loads(manifest_path.read_text(encoding="utf-8"))
        manifest = Manifest.model_validate(raw)
    except (OSError, ValueError) as exc:  # json and pydantic errors are ValueErrors
        raise DetectorStartError(f"{manifest_path} is unreadable: {exc}") from exc
    if manifest.format != FORMAT or manifest.format_version != FORMAT_VERSION:
        raise DetectorStartError(
            f"{manifest_path} has format {manifest.format!r} version "
            f"{manifest.format_version}; this railwatch reads {FORMAT!r} version {FORMAT_VERSION}"
        )
    missing = [name for name in REQUIRED_FILES if not (folder / name).is_file()]
    if missing:
        raise DetectorStartError(
            f"toxicity model folder {folder} is incomplete: missing {', '.join(missing)}"
        )
    return ModelFolder(path=folder, manifest=manifest)


def write_manifest(folder: Path, manifest: Manifest) -> None:
    """Write ``railwatch-model.json`` into ``folder`` (used by :mod:`.pull`)."""
    text = json.dumps(manifest.model_dump(mode="json"), indent=2, sort_keys=True) + "\n"
    (folder / MANIFEST).write_text(text, encoding="utf-8")

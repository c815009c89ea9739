"""Detoxify-shaped throughput end to end through the detector runner, on one GPU or the CPU.

Target (issue 13): 5,000 texts/s of 256 tokens on one H100, tokenisation included, and
the latency a request sees under that load. The model is a BERT of Detoxify
``original``'s shape with random weights (``--size base``: 12 layers, hidden 768; the
speed is the real model's, the scores mean nothing), written as a model folder through
the real ``build_folder_from_checkpoint`` path. Each text is scored through
``DetectorRunner.run`` exactly as the sidecar does: the runner batches concurrent
texts (``--batch``), the detector tokenises the batch (Rust fast tokenizer), sorts it by
length and pads each forward pass only to its longest text (a multiple of 8 on CUDA:
length bucketing and dynamic padding), copies ids and mask through pinned memory,
runs in float16/bfloat16 on CUDA, and ``--concurrency`` batches are in flight so one
thread tokenises while another's batch runs on the GPU.

Reported per configuration: texts/s over the whole run, the latency of each
``run`` call (submit to result: queueing, batching, tokenising, the forward pass)
p50/p95/p99, and the mean batch size the runner formed. A ``model only`` line gives
the forward pass alone on pre-tokenised full-length batches: the ceiling.

Usage::

    .venv/bin/python bench/bench_gpu_toxicity.py                    # auto: cuda if present
    .venv/bin/python bench/bench_gpu_toxicity.py --device cpu       # tiny model, few texts
    .venv/bin/python bench/bench_gpu_toxicity.py --batch 128,256 --dtype bfloat16 --compile

On CPU the defaults shrink (``--size tiny``, 256 texts) so it proves the script works;
the figures that matter come from a GPU.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import random
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from bench_detectors_toxicity import DATA, build_random_folder  # noqa: E402

from detectors.runner import DetectorRunner, RunSettings  # noqa: E402
from detectors.toxicity import ToxicityDetector  # noqa: E402


def make_texts(n: int, tokens: int, tokenizer: Any, seed: int = 0) -> list[str]:
    """``n`` texts of HateCheck sentences, each ``tokens/2``-``tokens`` BERT tokens long."""
    with DATA.resolve().open(newline="", encoding="utf-8") as f:
        cases = [row["test_case"].strip() for row in csv.DictReader(f)]
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        goal = rng.randint(tokens // 2, tokens - 2)
        text, count = "", 0
        while count < goal:
            sentence = rng.choice(cases)
            text += sentence + " "
            count += len(tokenizer.encode(sentence, add_special_tokens=False).ids)
        out.append(text)
    return out


async def through_runner(
    det: ToxicityDetector, texts: list[str], batch: int, concurrency: int, clients: int
) -> dict[str, float]:
    """Closed loop: ``clients`` tasks each send their next text as soon as one returns."""
    runner = DetectorRunner()
    runner.add(det, RunSettings(max_batch=batch, concurrency=concurrency, timeout_s=120.0))
    await runner.start()
    for _ in range(2):  # warm-up: allocator, kernels, autotuning
        await asyncio.gather(*(runner.run(det.name, t) for t in texts[: batch * concurrency]))
    latencies: list[float] = []
    sizes: list[int] = []
    next_index = 0

    async def client() -> None:
        nonlocal next_index
        while next_index < len(texts):
            text = texts[next_index]
            next_index += 1
            outcome = await runner.run(det.name, text)
            if outcome.error is not None:
                raise RuntimeError(f"detector error {outcome.error}")
            latencies.append(outcome.latency_ms)
            sizes.append(outcome.batch_size)

    t0 = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    elapsed = time.perf_counter() - t0
    await runner.close()
    latencies.sort()

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(len(latencies) * p))]

    return {
        "texts_s": len(texts) / elapsed,
        "p50": statistics.median(latencies),
        "p95": pct(0.95),
        "p99": pct(0.99),
        "batch": statistics.fmean(sizes),
    }


def model_only(det: ToxicityDetector, batch: int, tokens: int, seconds: float) -> float:
    """Forward passes alone on full ``tokens``-long batches: texts/s (the ceiling)."""
    import torch

    scorer: Any = det._scorer  # the loaded TransformerScorer
    model, device = scorer._model, scorer.device
    ids = torch.randint(1000, 30000, (batch, tokens), device=device)
    mask = torch.ones_like(ids)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    with torch.inference_mode():
        model(input_ids=ids, attention_mask=mask)
        sync()
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            model(input_ids=ids, attention_mask=mask)
            n += batch
        sync()
    return n / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--size", choices=["tiny", "base"], help="default: base on cuda")
    parser.add_argument("--dtype", default="auto", help="auto: float16 on cuda, float32 on cpu")
    parser.add_argument("--texts", type=int, help="texts per configuration (cuda 20000, cpu 256)")
    parser.add_argument("--tokens", type=int, default=256, help="max_length and text length")
    parser.add_argument("--batch", default=None, help="runner max_batch values (cuda 64,128,256)")
    parser.add_argument("--concurrency", default="2", help="batches in flight (threads)")
    parser.add_argument("--clients", type=int, default=0, help="closed-loop clients (0: 4x batch)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model")
    parser.add_argument("--seconds", type=float, default=3.0, help="model-only measurement")
    args = parser.parse_args()

    import torch

    device = (
        args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    )
    on_cuda = device.startswith("cuda")
    size = args.size or ("base" if on_cuda else "tiny")
    n_texts = args.texts or (20_000 if on_cuda else 256)
    batches = [int(b) for b in (args.batch or ("64,128,256" if on_cuda else "16,64")).split(",")]
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    name = torch.cuda.get_device_name() if on_cuda else "cpu"
    print(
        f"device {device} ({name}), torch {torch.__version__}, model {size} (random), "
        f"{n_texts} texts of {args.tokens // 2}-{args.tokens} tokens, compile {args.compile}"
    )
    print()
    print(
        "| batch | conc | dtype    |  texts/s | p50 ms | p95 ms | p99 ms | mean batch | model only texts/s |"
    )
    print(
        "| ----: | ---: | -------- | -------: | -----: | -----: | -----: | ---------: | -----------------: |"
    )
    with tempfile.TemporaryDirectory(prefix="railwatch-gpu-bench-") as tmp:
        folder = build_random_folder(size, Path(tmp))
        texts: list[str] | None = None
        for batch in batches:
            for conc in concurrencies:
                det = ToxicityDetector(
                    ToxicityDetector.Options(
                        backend="detoxify",
                        model_dir=str(folder),
                        device=device,
                        dtype=args.dtype,
                        max_length=args.tokens,
                        max_windows=1,
                        batch_size=batch,
                    )
                )
                asyncio.run(det.start())
                scorer: Any = det._scorer
                if texts is None:
                    texts = make_texts(n_texts, args.tokens, scorer._tokenizer)
                if args.compile:
                    scorer._model = torch.compile(scorer._model, dynamic=True)
                # in a worker thread, like the runner's forward passes (on a busy CPU the
                # main thread's OpenMP team alone ran 4x slower here)
                with ThreadPoolExecutor(1) as pool:
                    ceiling = pool.submit(
                        model_only, det, batch, args.tokens, args.seconds
                    ).result()
                stats = asyncio.run(  # closes the detector when done
                    through_runner(det, texts, batch, conc, args.clients or 4 * batch)
                )
                print(
                    f"| {batch:>5} | {conc:>4} | {scorer.dtype:<8} | {stats['texts_s']:>8,.0f} | "
                    f"{stats['p50']:>6.1f} | {stats['p95']:>6.1f} | {stats['p99']:>6.1f} | "
                    f"{stats['batch']:>10.1f} | {ceiling:>18,.0f} |"
                )


if __name__ == "__main__":
    main()

"""CPU per text of the offline toxicity backends through the detector runner (issue 8).

What a request pays: ``DetectorRunner.run`` for one text (batch 1, sequential calls, as
at concurrency 1) and 64 concurrent ``run`` calls that the runner batches (batch 64).
Each backend is measured two ways, interleaved in one run on the same texts:

- ``thread hop`` (before): the detector is blocking, so every batch goes through the
  lane's thread pool (``ThreadPoolExecutor.submit``, a wrapped future, a loop wake-up);
- ``queued`` (after, ``run: {inline: false}``): the detector is non-blocking, texts are
  queued and batched, and ``detect`` scores a batch of at most ``inline_chars``
  characters directly in the batch task on the loop; larger batches go to a thread;
- ``lane inline`` (after, the runner's default ``inline: true``): as ``queued``, but an
  idle lane scores a text in the caller's own task, so concurrent texts are not batched.

Process CPU time (all threads) over the calls, per text. Texts: HateCheck cases
(short, ~50 characters) or, with ``--chars N``, HateCheck cases joined to N characters.

Usage::

    .venv/bin/python bench/bench_toxicity_runner.py --seconds 2
    .venv/bin/python bench/bench_toxicity_runner.py --chars 2048
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import random
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from _data import HATECHECK  # noqa: E402 - bench/ is the script's own folder

from detectors.runner import DetectorRunner, RunSettings  # noqa: E402
from detectors.toxicity import ToxicityDetector  # noqa: E402

DATA = HATECHECK


def load_texts(chars: int, n: int) -> list[str]:
    with DATA.resolve().open(newline="", encoding="utf-8") as f:
        cases = [row["test_case"].strip() for row in csv.DictReader(f)]
    rng = random.Random(0)
    if not chars:
        return [rng.choice(cases) for _ in range(n)]
    out = []
    for _ in range(n):
        text = ""
        while len(text) < chars:
            text += rng.choice(cases) + " "
        out.append(text[:chars])
    return out


MODES = ("thread hop", "queued", "lane inline")


async def make_runner(backend: str, mode: str) -> DetectorRunner:
    hop = mode == "thread hop"
    det = ToxicityDetector(
        ToxicityDetector.Options(backend=backend, inline_chars=0 if hop else None),
        name="tox",
    )
    det.blocking = hop  # before: every batch through the lane's thread pool
    runner = DetectorRunner()
    settings = RunSettings(max_batch=64, timeout_s=30.0, inline=mode == "lane inline")
    runner.add(det, settings)
    await runner.start()
    return runner


async def one_round(runner: DetectorRunner, texts: list[str], batch: int) -> None:
    if batch == 1:
        for text in texts:
            await runner.run("tox", text)
    else:
        for i in range(0, len(texts), batch):
            await asyncio.gather(*(runner.run("tox", t) for t in texts[i : i + batch]))


async def main_async(args: argparse.Namespace) -> None:
    texts = load_texts(args.chars, 256)
    kind = f"{args.chars}-character texts" if args.chars else "short HateCheck cases"
    print(f"texts: {kind}; CPU ms per text through DetectorRunner.run (process, all threads)")
    print()
    print("| backend   | path        | batch | CPU ms/text | vs thread hop |")
    print("| --------- | ----------- | ----: | ----------: | ------------: |")
    for backend in args.backends.split(","):
        runners = {mode: await make_runner(backend, mode) for mode in MODES}
        for batch in (1, 64):
            cpu = dict.fromkeys(MODES, 0.0)
            done = dict.fromkeys(MODES, 0)
            for mode in MODES:
                await one_round(runners[mode], texts[:64], batch)  # warm-up
            start = time.perf_counter()
            while time.perf_counter() - start < args.seconds:
                for mode in MODES:
                    c = time.process_time()
                    await one_round(runners[mode], texts, batch)
                    cpu[mode] += time.process_time() - c
                    done[mode] += len(texts)
            base = cpu[MODES[0]] / done[MODES[0]]
            for mode in MODES:
                ms = cpu[mode] / done[mode]
                print(
                    f"| {backend:<9} | {mode:<11} | {batch:>5} | {ms * 1e3:>11.3f} | "
                    f"{ms / base:>13.2f} |"
                )
        for runner in runners.values():
            await runner.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", default="profanity,bilstm")
    parser.add_argument("--chars", type=int, default=0, help="text length (0: HateCheck cases)")
    parser.add_argument("--seconds", type=float, default=2.0, help="per backend and batch size")
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()

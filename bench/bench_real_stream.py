"""Streams from a real model, direct vs through the sidecar, as clients see them.

Not part of the suite (a real model server is needed). Point it at a model server
(llama.cpp's OpenAI server, see ``/work/shared/REAL-UPSTREAM.md``) and at a sidecar
in front of it; each client sends the same streamed request (temperature 0, a fixed
seed) to both, alternating, and records the arrival time of every content chunk:

- ``openai``: the official client's ``chat.completions.create(stream=True)``;
- ``langchain``: ``langchain_openai.ChatOpenAI(...).stream`` (skipped when not installed);
- ``httpx``: raw SSE lines over httpx.

Printed per client and target (medians over ``--runs``): content chunks, time to
first token, the largest gap between chunks, the median gap, the total time; and
whether the sidecar delivered the same chunks as direct (same pieces, same order).

Run: ``python bench/bench_real_stream.py --direct http://127.0.0.1:8000
--sidecar http://127.0.0.1:8091 --model MODEL [--runs 5]``. Only needs ``openai``
and ``httpx`` (and ``langchain-openai`` for that client); no railwatch import.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import openai

PROMPT = "Explain in about 120 words how rivers shape the land, in plain sentences."


def _openai(base: str, model: str, max_tokens: int) -> Iterator[str]:
    client = openai.OpenAI(base_url=base + "/v1", api_key="x", max_retries=0)
    for c in client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": PROMPT}], stream=True,
        temperature=0, seed=42, max_tokens=max_tokens,
    ):
        if c.choices and c.choices[0].delta.content:
            yield c.choices[0].delta.content


def _langchain(base: str, model: str, max_tokens: int) -> Iterator[str]:
    from langchain_openai import ChatOpenAI

    llm = ChatOpenAI(base_url=base + "/v1", api_key="x", model=model, temperature=0,  # type: ignore[arg-type]
                     seed=42, max_tokens=max_tokens, max_retries=0)  # type: ignore[call-arg]
    for piece in llm.stream(PROMPT):
        if piece.content:
            yield str(piece.content)


def _httpx(base: str, model: str, max_tokens: int) -> Iterator[str]:
    body = {"model": model, "stream": True, "temperature": 0, "seed": 42,
            "max_tokens": max_tokens, "messages": [{"role": "user", "content": PROMPT}]}
    with httpx.stream("POST", base + "/v1/chat/completions", json=body, timeout=120) as r:
        for line in r.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            doc = json.loads(line[6:])
            for ch in doc.get("choices") or ():
                content = (ch.get("delta") or {}).get("content")
                if content:
                    yield content


def measure(fn: Callable[[str, str, int], Iterator[str]], base: str, model: str,
            max_tokens: int) -> dict[str, Any]:
    t0 = time.perf_counter()
    pieces: list[str] = []
    times: list[float] = []
    for piece in fn(base, model, max_tokens):
        times.append(time.perf_counter())
        pieces.append(piece)
    end = time.perf_counter()
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    return {
        "pieces": pieces, "chunks": len(pieces),
        "ttft_ms": (times[0] - t0) * 1000 if times else None,
        "max_gap_ms": max(gaps) * 1000 if gaps else 0.0,
        "p50_gap_ms": statistics.median(gaps) * 1000 if gaps else 0.0,
        "total_ms": (end - t0) * 1000,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--direct", required=True)
    ap.add_argument("--sidecar", required=True)
    ap.add_argument("--model", default="model")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--max-tokens", type=int, default=200)
    args = ap.parse_args()
    clients: dict[str, Callable[[str, str, int], Iterator[str]]] = {
        "openai": _openai, "httpx": _httpx}
    try:
        import langchain_openai  # noqa: F401

        clients["langchain"] = _langchain
    except ImportError:
        print("langchain-openai not installed: skipping that client")
    print(f"{'client':<10} {'target':<8} {'chunks':>6} {'TTFT ms':>8} {'max gap ms':>10} "
          f"{'p50 gap ms':>10} {'total ms':>9} {'same chunks':>11}")
    for name, fn in clients.items():
        runs: dict[str, list[dict[str, Any]]] = {"direct": [], "sidecar": []}
        for _ in range(args.runs):
            for target, base in (("direct", args.direct), ("sidecar", args.sidecar)):
                runs[target].append(measure(fn, base, args.model, args.max_tokens))
        same = all(s["pieces"] == d["pieces"] for s, d in zip(runs["sidecar"], runs["direct"],
                                                               strict=True))
        for target, rs in runs.items():
            def med(key: str, rs: list[dict[str, Any]] = rs) -> float:
                return statistics.median(r[key] for r in rs if r[key] is not None)
            flag = ("yes" if same else "NO") if target == "sidecar" else ""
            print(f"{name:<10} {target:<8} {med('chunks'):>6.0f} {med('ttft_ms'):>8.1f} "
                  f"{med('max_gap_ms'):>10.1f} {med('p50_gap_ms'):>10.1f} "
                  f"{med('total_ms'):>9.0f} {flag:>11}")
        worst = max(r["max_gap_ms"] for r in runs["sidecar"])
        print(f"{name:<10} largest gap through the sidecar over all runs: {worst:.1f} ms "
              f"(direct: {max(r['max_gap_ms'] for r in runs['direct']):.1f} ms)")


if __name__ == "__main__":
    main()

"""SDK cost: import time, and CPU per guarded call against the same call unguarded.

- Import: ``import sidecar.sdk; from sidecar.sdk import guard, wrap_openai, observe`` in
  a fresh interpreter, against a bare interpreter measured in the same run (median of
  ``--imports`` runs each). Target: under 300 ms more than the bare interpreter.
- Calls: a plain function returning a 2 KB string, called directly and under
  ``@guard`` with the given policy (default: the shipped one; traces to an in-memory
  exporter), ``--calls`` times each, interleaved in rounds; CPU time of this process.

Run: ``.venv/bin/python bench/bench_sdk.py [--policy FILE] [--calls 500]``
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TEXT = "Summarise the following text. " + ("lorem ipsum dolor sit amet " * 72)


def _run_s(code: str) -> float:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, env=env)
    return time.perf_counter() - start


def bench_import(runs: int) -> None:
    bare, sdk = [], []
    for _ in range(runs):
        bare.append(_run_s("pass"))
        sdk.append(_run_s("import sidecar.sdk; from sidecar.sdk import guard, wrap_openai, observe"))
    b, s = statistics.median(bare), statistics.median(sdk)
    print(f"import: bare interpreter {b * 1000:.0f} ms, with the SDK {s * 1000:.0f} ms, "
          f"SDK import {(s - b) * 1000:.0f} ms (target < 300 ms)")


def bench_calls(policy: str | None, calls: int, rounds: int) -> None:
    from sidecar.sdk import guard
    from sidecar.sdk import runtime as rt

    with tempfile.TemporaryDirectory() as tmp:
        rt.configure(mode="local", policy=policy, settings={
            "data_dir": tmp, "exporters": [{"kind": "memory"}]})

        def plain(prompt: str) -> str:
            return "Here is the summary: " + prompt[:1800]

        guarded = guard(input=["prompt"])(plain)
        guarded(TEXT)  # start-up (models load) outside the measurement
        direct_ms, guarded_ms = [], []
        for _ in range(rounds):
            t = time.process_time()
            for _ in range(calls):
                plain(TEXT)
            direct_ms.append((time.process_time() - t) * 1000 / calls)
            t = time.process_time()
            for _ in range(calls):
                guarded(TEXT)
            guarded_ms.append((time.process_time() - t) * 1000 / calls)
        rt.shutdown()
    d, g = statistics.median(direct_ms), statistics.median(guarded_ms)
    print(f"calls ({policy or 'shipped default policy'}): direct {d:.4f} ms CPU/call, "
          f"guarded {g:.3f} ms CPU/call (all threads of this process), added {g - d:.3f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--policy", default=None)
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--imports", type=int, default=5)
    args = parser.parse_args()
    bench_import(args.imports)
    bench_calls(args.policy, args.calls, args.rounds)


if __name__ == "__main__":
    main()

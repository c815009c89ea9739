"""The example app runs as a user would run it; importing the SDK loads nothing heavy."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[3]


def test_the_quickstart_example_runs(demo_upstream: Any, tmp_path: Path) -> None:
    settings = tmp_path / "railwatch.yaml"
    settings.write_text(
        f"data_dir: {tmp_path / 'data'}\n"
        f"exporters:\n  - kind: jsonl\n    options: {{path: {tmp_path / 'traces.jsonl'}}}\n")
    env = {**os.environ, "OPENAI_BASE_URL": demo_upstream.url + "/v1", "OPENAI_API_KEY": "x",
           "RAILWATCH_SDK_CONFIG": str(settings), "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, str(ROOT / "examples" / "sdk_quickstart.py")],
                         env=env, capture_output=True, text=True, timeout=180, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.splitlines()
    assert lines[0] == "Echo: Please write to alice@example.com about my order."
    assert lines[1] == "CALL ME AT alice@example.com"  # it upper-cased a placeholder
    assert lines[2].startswith("blocked: block output toxicity:")
    assert lines[3].startswith("feedback recorded for ")
    traces = (tmp_path / "traces.jsonl").read_text().splitlines()
    assert len(traces) >= 5 and all('"railwatch.source":"sdk"' in t for t in traces)


def test_importing_the_sdk_loads_no_model_and_no_torch() -> None:
    code = ("import sys; import sidecar.sdk; from sidecar.sdk import guard, wrap_openai, observe; "
            "heavy = [m for m in ('torch', 'transformers', 'spacy', 'sklearn', 'chdb') "
            "if m in sys.modules]; print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.stdout.strip() == ""

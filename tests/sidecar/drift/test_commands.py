"""``railwatch drift run|baseline|report`` against the real engine, and the lease."""

from __future__ import annotations

import json
import math
import random
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml

from exporters.clickhouse import migrate
from exporters.clickhouse.drift_store import DriftStore, RequestFeatures
from sidecar.cli import main
from sidecar.drift.config import DriftSettings
from sidecar.drift.service import DriftService
from sidecar.drift.state import DriftState

if TYPE_CHECKING:
    from tests.conftest import Backend

WINDOW = 60.0


def _rows(start: float, n: int, seed: int, scale: float = 1.0) -> list[RequestFeatures]:
    rng = random.Random(seed)
    return [RequestFeatures(
        ts=start + i * WINDOW / n, request_id=f"{seed:08x}{i:024x}", pod=f"pod-{i % 3}",
        upstream="u", route="chat", model="m1", model_requested="m1", system_fingerprint="fp",
        system_prompt_hash="s", system_prompt_chars=10, prompt_hash="", prompt_chars=0,
        num={"completion_tokens": float(int(rng.lognormvariate(4, 0.5) * scale)),
             "prompt_tokens": float(int(rng.lognormvariate(3, 0.5)))},
        cat={"finish_reason": "stop"}) for i in range(n)]


@pytest.fixture
def seeded(backend: Backend, database: str, tmp_path: Path) -> tuple[Path, float, DriftStore]:
    migrate(backend.admin, database)
    store = DriftStore.for_client(backend.admin, database)
    end = math.floor(time.time() / WINDOW) * WINDOW - 10 * WINDOW
    store.insert_requests(_rows(end - 3 * WINDOW, 150, 1, 2.0)  # the pinned baseline's window
                          + _rows(end - 2 * WINDOW, 150, 2)
                          + _rows(end - WINDOW, 150, 3))
    config = tmp_path / "railwatch.yaml"
    config.write_text(yaml.safe_dump({
        "exporters": [{"kind": "clickhouse", "options": {"dsn": backend.dsn,
                                                          "database": database}}],
        "drift": {"window_s": WINDOW, "min_window_size": 100},
    }))
    return config, end, store


def _iso(ts: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ts, UTC).isoformat()


def test_run_baseline_report(seeded: Any, capsys: pytest.CaptureFixture[str],
                             tmp_path: Path) -> None:
    config, end, store = seeded
    at = _iso(end + 1)
    assert main(["drift", "run", "--config", str(config), "--at", at, "--json"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert {x["metric"] for x in lines} == {"completion_tokens", "prompt_tokens",
                                            "finish_reason"}
    assert not any(x["drifted"] for x in lines)  # same distribution, window against window

    assert main(["drift", "baseline", "--config", str(config), "--from", _iso(end - 3 * WINDOW),
                 "--to", _iso(end - 2 * WINDOW)]) == 0
    assert main(["drift", "run", "--config", str(config), "--at", at]) == 0
    out = capsys.readouterr().out
    assert "1 drifted" in out and "completion_tokens" in out

    png = tmp_path / "drift.png"
    assert main(["drift", "report", "--config", str(config), "--since", "1d", "--json",
                 "--png", str(png)]) == 0
    data = json.loads(capsys.readouterr().out)
    (group,) = data["groups"]
    assert group["drifted"] == ["completion_tokens"]
    assert any(e["kind"] == "window_drift" for e in data["events"])
    assert data["system_prompts"][0]["hash"] == "s"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    assert main(["drift", "report", "--config", str(config), "--since", "1d"]) == 0
    text = capsys.readouterr().out
    assert "m1 / chat: DRIFTED: completion_tokens" in text and "pinned baseline *" in text
    assert main(["drift", "baseline", "--config", str(config), "--clear"]) == 0
    assert store.baselines() == {}
    assert main(["drift", "report", "--config", str(config), "--since", "yesterday"]) == 2


async def test_one_lease_holder_computes_the_others_mirror_its_gauges(seeded: Any) -> None:
    _config, end, store = seeded
    settings = DriftSettings(window_s=WINDOW, min_window_size=100, lease_s=60)
    a = DriftService(settings, store, DriftState(), pod="a", store_text=False)
    b = DriftService(settings, store, DriftState(), pod="b", store_text=False)
    store.set_baseline(end - 3 * WINDOW, end - 2 * WINDOW)
    late = end + 2 * settings.insert_max_age_s + 1  # the job waits for buffered rows
    assert await a.tick(late)
    assert await b.tick(late) == []
    assert a.state.runs == {"ok": 1} and b.state.runs == {"no_lease": 1}
    # b never computed, yet exports the fleet's answer from ClickHouse
    key = ("m1", "chat", "completion_tokens", "ks")
    assert b.state.windows[key].drifted and a.state.windows[key].drifted
    assert await a.tick(late + 1) == []  # that window is done; nothing recomputed

"""The ``railwatch`` command, run as a real process the way the README runs it."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import openai
import orjson
import pytest

RAILWATCH = [sys.executable, "-m", "sidecar.cli"]


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAILWATCH_")}
    env.update({"RAILWATCH_DATA_DIR": str(tmp_path / "data"), **extra})
    return env


def test_version_and_help() -> None:
    out = subprocess.run([*RAILWATCH, "--version"], capture_output=True, text=True, check=True)
    assert re.fullmatch(r"railwatch \d+\.\d+\.\d+\n", out.stdout)
    for sub in ([], ["serve"], ["demo-upstream"], ["check"], ["models"], ["models", "pull"],
                ["traces"], ["traces", "tail"], ["traces", "query"], ["report"]):
        res = subprocess.run([*RAILWATCH, *sub, "--help"], capture_output=True, text=True)
        assert res.returncode == 0 and "usage: railwatch" in res.stdout


def test_bad_config_fails_fast_naming_the_key(tmp_path: Path) -> None:
    cfg = tmp_path / "railwatch.yaml"
    cfg.write_text("server:\n  max_in_flight: many\n")
    res = subprocess.run(
        [*RAILWATCH, "serve", "--config", str(cfg)], capture_output=True, text=True,
        env=_env(tmp_path), timeout=60,
    )
    assert res.returncode == 2
    assert f"invalid setting 'server.max_in_flight' (from {cfg})" in res.stderr
    res = subprocess.run(
        [*RAILWATCH, "serve"], capture_output=True, text=True, timeout=60,
        env=_env(tmp_path, RAILWATCH_UPSTREAM__URL="not a url"),
    )
    assert res.returncode == 2 and "RAILWATCH_UPSTREAM__URL" in res.stderr


def test_serve_without_upstream_starts_the_demo(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [*RAILWATCH, "serve", "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, env=_env(tmp_path, RAILWATCH_PRIVACY__CAPTURE="raw"),
    )
    try:
        banner = _banner_of(proc)
        match = re.search(r"listening on (http://127\.0\.0\.1:\d+)", banner)
        assert match, banner
        url = match.group(1)
        assert "demo upstream" in banner and "not a language model" in banner
        assert f'OpenAI(base_url="{url}/v1"' in banner
        client = openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0)
        reply = client.chat.completions.create(
            model="railwatch-demo", messages=[{"role": "user", "content": "from the README"}]
        )
        assert reply.choices[0].message.content == "Echo: from the README"
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "from the README" not in err  # no request text in logs
    # the default storage is embedded chDB in the data dir; the sidecar has exited, so the
    # CLI can open it (one process per chDB path)
    env = _env(tmp_path)
    res = subprocess.run([*RAILWATCH, "traces", "query", "--json", "--text", "--since", "1h"],
                         capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 0, res.stderr
    records = [orjson.loads(line) for line in res.stdout.splitlines()]
    chat = [r for r in records if r["route"] == "chat"]
    assert len(chat) == 1 and chat[0]["status"] == 200
    assert chat[0]["output_text"] == "Echo: from the README"
    res = subprocess.run([*RAILWATCH, "report", "--since", "1h"], capture_output=True, text=True,
                         env=env, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "requests" in res.stdout.lower()
    assert "no model prices configured" in res.stdout
    assert "no request asked for JSON" in res.stdout
    # a table with --text shows the text; tail prints its header once
    res = subprocess.run([*RAILWATCH, "traces", "query", "--text", "--since", "1h"],
                         capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 0 and "output: Echo: from the README" in res.stdout, res.stdout
    res = subprocess.run([*RAILWATCH, "traces", "tail", "-n", "5"], capture_output=True,
                         text=True, env=env, timeout=120)
    assert res.returncode == 0 and res.stdout.count("started_at") == 1, res.stdout
    assert len(res.stdout.splitlines()) == 1 + len(records)
    res = subprocess.run([*RAILWATCH, "traces", "show", chat[0]["trace_id"]], capture_output=True,
                         text=True, env=env, timeout=120)
    assert res.returncode == 0, res.stderr
    assert f"request {chat[0]['request_id']}" in res.stdout and "attempt   primary" in res.stdout
    res = subprocess.run([*RAILWATCH, "traces", "show", "0" * 32], capture_output=True,
                         text=True, env=env, timeout=120)
    assert res.returncode == 1


def _banner_of(proc: subprocess.Popen[str]) -> str:
    assert proc.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if "Ctrl-C" in line:
            break
    return "".join(lines)


def test_serve_papercuts_busy_port_shared_data_dir_and_banner(tmp_path: Path, closed_port: int) -> None:
    upstream = f"http://127.0.0.1:{closed_port}"
    first = subprocess.Popen([*RAILWATCH, "serve", "--upstream", upstream, "--port", "0"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env=_env(tmp_path))
    try:
        banner = _banner_of(first)
        match = re.search(r"listening on http://127\.0\.0\.1:(\d+)", banner)
        assert match, banner
        assert "unused-by-the-demo" not in banner and "railwatch-demo" not in banner
        assert "YOUR-API-KEY" in banner and "YOUR-MODEL" in banner
        # the same port, another data dir: one clear line, no traceback
        busy = subprocess.run([*RAILWATCH, "serve", "--upstream", upstream, "--port", match.group(1)],
                              capture_output=True, text=True, timeout=120,
                              env=_env(tmp_path / "other"))
        assert busy.returncode == 1
        assert "cannot listen on" in busy.stderr and "Traceback" not in busy.stderr, busy.stderr
        # the same data dir: the chDB directory is named, not the spill directory
        shared = subprocess.run([*RAILWATCH, "serve", "--upstream", upstream, "--port", "0"],
                                capture_output=True, text=True, timeout=120, env=_env(tmp_path))
        assert shared.returncode == 1
        assert "ClickHouse data directory" in shared.stderr and "spill" not in shared.stderr, \
            shared.stderr
    finally:
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=30)


def test_check_exits_3_when_the_decision_is_block() -> None:
    toxic = "You are a stupid idiot and I hate you, shut up you worthless damn moron."
    res = subprocess.run([*RAILWATCH, "check", "--stage", "output", toxic], capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 3 and "decision: block" in res.stdout, res.stdout + res.stderr
    res = subprocess.run([*RAILWATCH, "check", "--json", "a kind sentence"], capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 0 and orjson.loads(res.stdout)["decision"]["action"] == "pass"


@pytest.mark.parametrize("argv", [["serve", "--port", "notaport"], ["frobnicate"]])
def test_usage_errors_exit_2(argv: list[str]) -> None:
    res = subprocess.run([*RAILWATCH, *argv], capture_output=True, text=True)
    assert res.returncode == 2


def test_tune_gc_freezes_the_startup_heap_and_sets_the_young_threshold() -> None:
    import gc

    from sidecar.cli import _tune_gc

    before = gc.get_threshold()
    try:
        _tune_gc(12_345)
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold() == (12_345, before[1], before[2])
        gc.set_threshold(*before)
        _tune_gc(0)  # 0 keeps Python's threshold
        assert gc.get_threshold() == before
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


def test_gc_young_threshold_is_a_bounded_setting(tmp_path: Path) -> None:
    res = subprocess.run(
        [*RAILWATCH, "serve"], capture_output=True, text=True, timeout=60,
        env=_env(tmp_path, RAILWATCH_SERVER__GC_YOUNG_THRESHOLD="-1"),
    )
    assert res.returncode == 2
    assert "invalid setting 'server.gc_young_threshold'" in res.stderr
    assert "RAILWATCH_SERVER__GC_YOUNG_THRESHOLD" in res.stderr

"""kill -9 under load loses (almost) nothing: the real sidecar process, embedded chDB.

The sidecar runs as its own process (``python -m sidecar.cli serve``) against the
demo upstream of this test process. Requests flow at about 40 a second from a few
concurrent clients; the process is killed with SIGKILL in the middle of it,
restarted on the same data directory (its journal replays), and stopped cleanly.
Then every answered request's trace id is looked up in chDB (read by a separate
process: one chDB engine path per process).
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson

_URL = re.compile(r"listening on (http://\S+)")
# what the journal may lose: records answered in its last flush interval (20 ms
# by default; at 40 requests/s about one), with slack for a loaded test machine
MAX_LOST = 4


def _start(config: Path) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "sidecar.cli", "serve", "--config", str(config)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        match = _URL.search(line)
        if match:
            return proc, match.group(1)
    proc.kill()
    raise AssertionError("the sidecar did not start: " + (proc.stdout.read() or "")[-2000:])


async def _healthy(url: str) -> None:
    """One answered /healthz: the process serves, so its SIGTERM handler is installed."""
    async with aiohttp.ClientSession() as session:
        async with session.get(url + "/healthz") as r:
            assert r.status == 200


async def _load(url: str, proc: subprocess.Popen[str], answered: list[str]) -> None:
    """About 40 requests/s from 4 clients; SIGKILL after 1.5 s, while requests are in flight."""
    body = {"model": "m", "messages": [{"role": "user", "content": "hello " * 50}]}
    started = time.monotonic()

    async def client(session: aiohttp.ClientSession) -> None:
        while True:
            t = time.monotonic()
            try:
                async with session.post(url + "/v1/chat/completions", json=body) as r:
                    await r.read()
                    if r.status == 200:
                        answered.append(r.headers["x-railwatch-trace-id"])
            except (TimeoutError, aiohttp.ClientError):
                return  # the process is gone
            await asyncio.sleep(max(0.0, 0.1 - (time.monotonic() - t)))

    async def killer() -> None:
        await asyncio.sleep(1.5 - (time.monotonic() - started))
        os.kill(proc.pid, signal.SIGKILL)

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        await asyncio.gather(killer(), *(client(session) for _ in range(4)))


def _stored_trace_ids(data_dir: Path) -> set[str]:
    script = (
        "import sys, clickhouse_connect, orjson\n"
        "c = clickhouse_connect.get_client(dsn='chdb://' + sys.argv[1])\n"
        "rows = c.query('SELECT trace_id FROM railwatch.traces').result_rows\n"
        "sys.stdout.write(orjson.dumps([r[0] for r in rows]).decode())\n"
    )
    out = subprocess.run([sys.executable, "-c", script, str(data_dir / "clickhouse")],
                         capture_output=True, text=True, timeout=120, check=True)
    return set(orjson.loads(out.stdout))


def test_kill_9_under_load_loses_at_most_the_last_flush_interval(
    tmp_path: Path, demo_upstream: Any,
) -> None:
    data = tmp_path / "data"
    config = tmp_path / "railwatch.yaml"
    config.write_text(
        f"data_dir: {data}\nupstream: {{url: '{demo_upstream.url}'}}\n"
        "server: {port: 0}\nguardrails: {enabled: false}\nmetrics: {enabled: false}\n"
        "log_level: WARNING\n"
    )
    proc, url = _start(config)
    answered: list[str] = []
    try:
        asyncio.run(_load(url, proc, answered))
        proc.wait(10)
        assert proc.returncode == -signal.SIGKILL
        assert len(answered) >= 20  # the load really ran
        proc, url = _start(config)  # replays the journal into ClickHouse
        asyncio.run(_healthy(url))
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # a clean stop flushes
            proc.wait(60)
    assert proc.returncode == 0
    stored = _stored_trace_ids(data)
    lost = [t for t in answered if t not in stored]
    assert len(lost) <= MAX_LOST, f"{len(lost)} of {len(answered)} answered requests lost"
    assert set(answered[: -MAX_LOST]) <= stored  # what may be lost is only the newest

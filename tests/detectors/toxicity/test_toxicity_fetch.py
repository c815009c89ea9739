"""Fetching Detoxify on first use, against a real HTTP server on loopback.

The server plays GitHub (the checkpoint, named ``toxic_original-<sha256 prefix>.ckpt``
like Detoxify's releases) and the Hugging Face hub (the base model's config and
tokenizer files), serving the tiny checkpoint and base folder of ``conftest.py``.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from detectors.runner import DetectorRunner, RunSettings
from detectors.toxicity import ToxicityDetector
from detectors.toxicity.fetch import FetchError, FetchPlan, fetch_detoxify
from detectors.toxicity.folder import read_model_folder

pytest.importorskip("torch")
pytest.importorskip("transformers")

Options = ToxicityDetector.Options
BASE_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "vocab.txt")


class Server:
    """Serves ``files`` (URL path -> bytes); ``trickle`` paths send 100 bytes every 0.1 s."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.trickle: set[str] = set()
        self.requests: list[str] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                owner.requests.append(self.path)
                body = owner.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.path not in owner.trickle:
                    self.wfile.write(body)
                    return
                for i in range(0, len(body), 100):
                    self.wfile.write(body[i : i + 100])
                    self.wfile.flush()
                    time.sleep(0.1)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server(tiny_checkpoint: Path, tiny_base: Path) -> Iterator[Server]:
    srv = Server()
    data = tiny_checkpoint.read_bytes()
    srv.files[f"/ckpt/toxic_original-{hashlib.sha256(data).hexdigest()[:8]}.ckpt"] = data
    srv.files["/ckpt/toxic_original-00000000.ckpt"] = data  # wrong prefix
    for name in BASE_FILES:
        srv.files[f"/base/{name}"] = (tiny_base / name).read_bytes()
    yield srv
    srv.close()


@pytest.fixture
def allow_downloads(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("RAILWATCH_MODEL_DOWNLOADS", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))  # no cached checkpoint


def _good_url(srv: Server) -> str:
    return srv.url + next(p for p in srv.files if p.startswith("/ckpt/") and "-0000" not in p)


def _plan(srv: Server, dest: Path, url: str | None = None, **limits: float) -> FetchPlan:
    return FetchPlan.for_checkpoint(
        "original",
        dest,
        checkpoint_url=url or _good_url(srv),
        base_url=srv.url + "/base",
        **limits,
    )


def _options(srv: Server, root: Path, url: str | None = None, **extra: object) -> Options:
    return Options.model_validate(
        {
            "models_root": str(root),
            "checkpoint_url": url or _good_url(srv),
            "base_url": srv.url + "/base",
            **extra,
        }
    )


def _wait(det: ToxicityDetector, until: Callable[[dict[str, object]], bool]) -> dict[str, object]:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        fetch = det.state().get("fetch") or {}
        if until(fetch):
            return fetch
        time.sleep(0.05)
    raise AssertionError(f"fetch state stuck at {det.state().get('fetch')}")


@pytest.mark.usefixtures("allow_downloads")
def test_fetch_writes_a_model_folder(server: Server, tmp_path: Path) -> None:
    dest = tmp_path / "models" / "detoxify-original"
    assert fetch_detoxify(_plan(server, dest)) == dest
    folder = read_model_folder(dest)
    assert folder.checkpoint == "original"
    assert folder.manifest.source == _good_url(server)
    assert sorted(p.name for p in dest.parent.iterdir()) == ["detoxify-original"]  # no leftovers


@pytest.mark.usefixtures("allow_downloads")
def test_checksum_mismatch_is_refused(server: Server, tmp_path: Path) -> None:
    dest = tmp_path / "models" / "detoxify-original"
    bad = server.url + "/ckpt/toxic_original-00000000.ckpt"
    with pytest.raises(FetchError, match="SHA-256") as err:
        fetch_detoxify(_plan(server, dest, bad))
    assert err.value.code == "checksum"
    assert not dest.exists() and list(dest.parent.iterdir()) == []


@pytest.mark.usefixtures("allow_downloads")
def test_auto_switches_to_detoxify_when_the_fetch_is_done(server: Server, tmp_path: Path) -> None:
    async def scenario() -> None:
        det = ToxicityDetector(_options(server, tmp_path))
        assert det.blocking is False  # starts on the cheap fallback
        runner = DetectorRunner()
        runner.add(det, RunSettings(inline=False, timeout_s=30))
        await runner.start()  # returns at once: the fetch runs in the background
        assert det.backend == "profanity"
        assert det.state()["fetch"]["state"] in ("fetching", "ready")
        before = await runner.run("toxicity", "you are an idiot")
        assert [f.label for f in before.findings] == ["toxicity"]
        fetch = await asyncio.to_thread(_wait, det, lambda f: f.get("state") != "fetching")
        assert fetch["state"] == "ready"
        assert det.backend == "detoxify" and "fallback_reason" not in det.state()
        assert runner.state()["detectors"]["toxicity"]["state"]["backend"] == "detoxify"
        after = await runner.run("toxicity", "you are an idiot")
        assert len(after.findings) == 6 and after.error is None
        assert after.findings[0].metadata["backend"] == "detoxify"
        await runner.close()

    asyncio.run(scenario())
    # the next start finds the folder: no request, blocking from the start
    requests = len(server.requests)
    det = ToxicityDetector(_options(server, tmp_path))
    assert det.blocking is True
    asyncio.run(det.start())
    assert det.backend == "detoxify" and "fetch" not in det.state()
    assert len(server.requests) == requests


@pytest.mark.usefixtures("allow_downloads")
def test_failed_fetch_keeps_the_fallback_and_says_so(
    server: Server, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    det = ToxicityDetector(
        _options(server, tmp_path, server.url + "/ckpt/toxic_original-00000000.ckpt")
    )
    with caplog.at_level(logging.WARNING, logger="detectors.toxicity"):
        asyncio.run(det.start())
        fetch = _wait(det, lambda f: f.get("state") != "fetching")
    assert fetch["state"] == "failed" and fetch["error"] == "checksum"
    assert det.backend == "profanity"
    assert "fetching Detoxify failed (checksum)" in det.state()["fallback_reason"]
    assert any("FALLBACK backend profanity" in r.getMessage() for r in caplog.records)
    assert not (tmp_path / "detoxify-original").exists()
    asyncio.run(det.close())


@pytest.mark.usefixtures("allow_downloads")
@pytest.mark.parametrize(
    ("env", "option", "reason"),
    [
        ({"HF_HUB_OFFLINE": "1"}, True, "HF_HUB_OFFLINE is set"),
        ({"TRANSFORMERS_OFFLINE": "true"}, True, "TRANSFORMERS_OFFLINE is set"),
        ({"RAILWATCH_MODEL_DOWNLOADS": "0"}, True, "RAILWATCH_MODEL_DOWNLOADS=0"),
        ({}, False, "the toxicity option download is false"),
    ],
)
def test_forbidden_fetch_makes_no_request(
    server: Server,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    env: dict[str, str],
    option: bool,
    reason: str,
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    det = ToxicityDetector(_options(server, tmp_path, download=option))
    asyncio.run(det.start())
    state = det.state()
    assert state["backend"] == "profanity" and "fetch" not in state
    assert reason in state["fallback_reason"]
    time.sleep(0.2)
    assert server.requests == []


@pytest.mark.usefixtures("allow_downloads")
def test_a_silent_host_fails_in_bounded_time(tmp_path: Path, closed_port: int) -> None:
    silent = socket.socket()  # accepts connections (backlog) but never answers
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    url = f"http://127.0.0.1:{silent.getsockname()[1]}/ckpt/toxic_original-abcdef12.ckpt"
    plan = FetchPlan.for_checkpoint(
        "original",
        tmp_path / "detoxify-original",
        checkpoint_url=url,
        base_url="http://127.0.0.1:9/base",
        connect_timeout_s=0.3,
    )
    t0 = time.monotonic()
    with pytest.raises(FetchError) as err:
        fetch_detoxify(plan)
    assert err.value.code == "timeout"
    assert time.monotonic() - t0 < 10  # 0.3 s per socket operation, with a wide margin
    silent.close()
    port = closed_port  # nothing listens there: refused at once
    with pytest.raises(FetchError) as err:
        fetch_detoxify(
            FetchPlan.for_checkpoint(
                "original",
                tmp_path / "d",
                checkpoint_url=f"http://127.0.0.1:{port}/x-abcdef12.ckpt",
            )
        )
    assert err.value.code == "unreachable"


@pytest.mark.usefixtures("allow_downloads")
def test_start_never_waits_and_the_total_limit_holds(server: Server, tmp_path: Path) -> None:
    url = _good_url(server)
    server.trickle.add(url.removeprefix(server.url))  # minutes for the whole file
    det = ToxicityDetector(_options(server, tmp_path, download_timeout_s=1.0))
    t0 = time.monotonic()
    asyncio.run(det.start())
    assert time.monotonic() - t0 < 30  # loading the fallback, not the download
    assert det.backend == "profanity"
    fetch = _wait(det, lambda f: f.get("state") != "fetching")
    assert fetch["state"] == "failed" and fetch["error"] == "timeout"
    assert float(str(fetch["seconds"])) < 10


@pytest.mark.usefixtures("allow_downloads")
def test_close_stops_a_fetch_in_progress(server: Server, tmp_path: Path) -> None:
    url = _good_url(server)
    server.trickle.add(url.removeprefix(server.url))
    det = ToxicityDetector(_options(server, tmp_path))
    asyncio.run(det.start())
    _wait(det, lambda f: f.get("state") == "fetching" and len(server.requests) > 0)
    t0 = time.monotonic()
    asyncio.run(det.close())
    assert time.monotonic() - t0 < 5
    assert det.state() == {"backend": None, "started": False}
    assert not (tmp_path / "detoxify-original").exists()

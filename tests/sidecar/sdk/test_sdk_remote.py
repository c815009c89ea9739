"""The SDK in remote mode: a real sidecar detects and stores; same decisions as local."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import openai
import pytest

from sidecar.errors import GuardrailViolation, SdkRemoteError
from tests.helpers.servers import seen

EMAIL = "alice@example.com"
TOKEN = "t" * 32
PROMPTS = (
    "write to alice@example.com",
    "be rude [[demo:toxic]]",
    "my key sk-proj-" + "A1b2C3d4E5f6G7h8I9j0" * 2,
    "json please [[demo:invalid_json_times=1]]",
    "details [[demo:pii]]",
)


def _outcomes(demo: Any, run: str) -> list[Any]:
    """What the wrapped client gives for each prompt: the answer, or the violation."""
    from sidecar.sdk import wrap_openai

    client = wrap_openai(openai.OpenAI(base_url=demo.url + "/v1", api_key="x", max_retries=0))
    out: list[Any] = []
    for prompt in PROMPTS:
        extra = {"response_format": {"type": "json_object"}} if "json" in prompt else {}
        try:
            reply = client.chat.completions.create(
                model="m", messages=[{"role": "user", "content": f"{prompt} {run}"}], **extra)
            out.append(("answer", (reply.choices[0].message.content or "").replace(run, "")))
        except GuardrailViolation as exc:
            out.append(("violation", exc.action, exc.stage, exc.reasons))
    return out


@pytest.fixture
def remote_sidecar(start_sidecar: Any, demo_upstream: Any, policy_file: Path) -> Any:
    return start_sidecar(demo_upstream.url, guardrails={"enabled": True, "policy": str(policy_file)},
                         sdk={"ingest_token": TOKEN})


def test_remote_and_local_decide_alike(remote_sidecar: Any, demo_upstream: Any,
                                       policy_file: Path, tmp_path: Path) -> None:
    from sidecar.sdk import runtime as rt

    rt.shutdown()
    try:
        rt.configure(mode="remote", sidecar_url=remote_sidecar.url, token=TOKEN)
        remote_run = f"r-{uuid.uuid4().hex[:8]}"
        remote = _outcomes(demo_upstream, remote_run)
        rt.shutdown()  # flushes the traces to the sidecar
        rt.configure(mode="local", policy=policy_file, settings={
            "data_dir": str(tmp_path / "data"), "exporters": [{"kind": "memory"}]})
        local = _outcomes(demo_upstream, f"l-{uuid.uuid4().hex[:8]}")
    finally:
        rt.shutdown()
        rt._config = None
    assert remote == local
    kinds = [o[0] for o in remote]
    assert kinds == ["answer", "violation", "violation", "answer", "answer"]
    assert EMAIL not in json.dumps([r["body"] for r in seen(demo_upstream, remote_run)])
    records = remote_sidecar.memory.wait_for(lambda rs: len(rs) >= len(PROMPTS))
    sdk = [r for r in records if r.attributes.get("railwatch.source") == "sdk"]
    assert len(sdk) == len(PROMPTS)
    assert sorted(r.decision for r in sdk) == sorted(["mask", "block", "block", "pass", "mask"])


def test_ingestion_needs_the_token(remote_sidecar: Any) -> None:
    import urllib.error
    import urllib.request

    def post(token: str | None, body: bytes = b'{"records": []}') -> int:
        headers = {"Content-Type": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        req = urllib.request.Request(remote_sidecar.url + "/v1/sdk/traces", data=body,
                                     headers=headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return int(resp.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)

    assert post(None) == 401 and post("wrong" * 8) == 401
    assert post(TOKEN) == 200
    assert post(TOKEN, b'{"records": [{"trace_id": 5}]}') == 400


def test_a_remote_check_that_fails_fails_closed(closed_port: int) -> None:
    from sidecar.errors import ConfigError, SdkRemoteError
    from sidecar.sdk import runtime as rt

    rt.shutdown()
    try:
        rt.configure(mode="remote", sidecar_url=f"http://127.0.0.1:{closed_port}", token=TOKEN)
        with pytest.raises((SdkRemoteError, ConfigError)):
            rt.start()
    finally:
        rt.shutdown()
        rt._config = None


def test_feedback_for_a_remote_sdk_trace_is_accepted(remote_sidecar: Any) -> None:
    from sidecar.sdk import current_trace_id, guard, record_feedback
    from sidecar.sdk import runtime as rt

    ids: list[str | None] = []

    @guard(input=["prompt"])
    def answer(prompt: str) -> str:
        ids.append(current_trace_id())
        return "fine"

    rt.shutdown()
    try:
        rt.configure(mode="remote", sidecar_url=remote_sidecar.url, token=TOKEN)
        answer("hello")
        rt.shutdown()  # the trace reaches the sidecar, which now knows the id
        assert ids[0] is not None
        record_feedback(ids[0], thumbs="up")  # raises SdkRemoteError on a 404
        with pytest.raises(SdkRemoteError):
            record_feedback("ab" * 16, thumbs="up")  # an id nobody issued
    finally:
        rt.shutdown()
        rt._config = None

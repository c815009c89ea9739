"""Remote mode: a running sidecar detects and stores; the SDK only masks and decides locally.

:class:`RemoteGuard` is a :class:`~sidecar.pipeline.guard.Guard` whose stages run on
the sidecar: the policy's routes come from ``GET /v1/guardrails/policy``, and each
text of a stage is checked with ``POST /v1/guardrails/check``, which answers every
finding with the action it triggered. Masking, restoring and the attempt engine
then run here exactly as in local mode (so placeholders are stable across the
messages of a call, and the values never leave the process but to the sidecar).

:class:`SidecarTraceExporter` posts finished trace records to the sidecar's
``POST /v1/sdk/traces`` in batches (authenticated by ``sdk.ingest_token``).

Every call is bounded by ``timeout_s``. A check that fails raises
:class:`~sidecar.errors.SdkRemoteError`: a guard that cannot check fails closed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

import aiohttp
import orjson

from detectors.base import Finding
from detectors.runner import DetectionOutcome, DetectorRunner
from exporters.base import ExportResult
from sidecar.errors import ConfigError, SdkRemoteError
from sidecar.pipeline.guard import Guard, Segment, StageResult
from sidecar.policy import PASS, Decision, Policy, Route, Triggered, merge
from sidecar.record import TraceRecord

MAX_ANSWER_BYTES = 16 * 1024 * 1024


class RemoteGuard(Guard):
    def __init__(self, base_url: str, token: str | None, timeout_s: float) -> None:
        super().__init__(Policy(), DetectorRunner(), {})
        self.base_url = base_url.rstrip("/")
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(timeout=self.timeout, headers=self.headers)
        doc = await self._request("GET", "/v1/guardrails/policy", None)
        try:
            self.policy = Policy.model_validate(doc)
        except ValueError as exc:
            raise ConfigError(f"the sidecar at {self.base_url} sent a policy this SDK cannot "
                              f"read: {type(exc).__name__}") from None
        self._routes.clear()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _request(self, method: str, path: str, body: Any) -> Any:
        assert self._session is not None, "RemoteGuard.start() first"
        data = orjson.dumps(body) if body is not None else None
        try:
            async with self._session.request(
                method, self.base_url + path, data=data,
                headers={"Content-Type": "application/json"} if data else None,
            ) as resp:
                raw = await resp.content.read(MAX_ANSWER_BYTES + 1)
                if resp.status != 200 or len(raw) > MAX_ANSWER_BYTES:
                    raise SdkRemoteError(f"the sidecar answered {resp.status} to {path}")
                return orjson.loads(raw)
        except (aiohttp.ClientError, TimeoutError, orjson.JSONDecodeError) as exc:
            raise SdkRemoteError(f"the sidecar could not be asked ({path}): "
                                 f"{type(exc).__name__}") from None

    async def run_stage(
        self, route: Route, stage: str, segments: Sequence[Segment], *, solo: bool | None = None
    ) -> StageResult:
        """The sidecar's check API per segment (``solo`` does not apply: it batches)."""
        if not segments:
            return StageResult(PASS)
        started = time.perf_counter()
        answers = await asyncio.gather(*(
            self._request("POST", "/v1/guardrails/check", {
                "text": s.text, "stage": stage, "route": route.name,
                **({"response_format": s.context.response_format}
                   if s.context.response_format else {}),
            })
            for s in segments
        ))
        result = StageResult(PASS, started)
        for answer in answers:
            outcomes, decision = _from_answer(answer)
            result.outcomes.append(outcomes)
            result.decisions.append(decision)
        result.decision = merge(result.decisions)
        return result


def _from_answer(answer: Any) -> tuple[dict[str, DetectionOutcome], Decision]:
    """One check API answer as the outcomes and decision a local stage would have made."""
    try:
        latency = float(answer.get("latency_ms") or 0.0)
        by_detector: dict[str, list[Finding]] = {}
        triggered: list[Triggered] = []
        for item in answer["findings"]:
            finding = Finding(str(item["detector"]), str(item["label"]), float(item["score"]),
                              int(item["start"]), int(item["end"]), dict(item.get("metadata") or {}))
            by_detector.setdefault(finding.detector, []).append(finding)
            if item.get("action"):
                triggered.append(Triggered(finding, str(item["action"])))
        verdict = answer["decision"]
        decision = (Decision(str(verdict["action"]), tuple(map(str, verdict["reasons"])),
                             tuple(triggered)) if verdict["action"] != "pass" else PASS)
    except (KeyError, TypeError, ValueError, AttributeError):
        raise SdkRemoteError("the sidecar's check answer has an unexpected shape") from None
    outcomes = {name: DetectionOutcome(name, tuple(found), latency)
                for name, found in by_detector.items()}
    return outcomes, decision


class SidecarTraceExporter:
    """Posts trace records to a sidecar. Runs on a batch processor's thread (blocking)."""

    name = "sidecar"

    def __init__(self, base_url: str, token: str | None, timeout_s: float) -> None:
        self.url = base_url.rstrip("/") + "/v1/sdk/traces"
        self.token = token
        self.timeout_s = timeout_s
        self.sent = 0
        self.failed = 0

    def export(self, batch: Sequence[TraceRecord]) -> ExportResult:
        import urllib.error
        import urllib.request

        body = orjson.dumps({"records": [r.as_dict() for r in batch]})
        request = urllib.request.Request(self.url, data=body, method="POST", headers={
            "Content-Type": "application/json",
            **({"Authorization": f"Bearer {self.token}"} if self.token else {}),
        })
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as resp:  # noqa: S310
                ok = resp.status == 200
        except (urllib.error.URLError, OSError):
            ok = False
        if ok:
            self.sent += len(batch)
            return ExportResult.SUCCESS
        self.failed += len(batch)
        return ExportResult.FAILURE

    def force_flush(self, timeout_s: float = 10.0) -> bool:
        return True

    def shutdown(self, timeout_s: float = 10.0) -> None:
        return None

    def state(self) -> dict[str, Any]:
        return {"sent": self.sent, "failed": self.failed}

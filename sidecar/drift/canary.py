"""Canary probes: fixed prompts sent to each upstream on a schedule, answers compared.

Each configured prompt goes straight to each upstream's ``/v1/chat/completions``
(temperature 0, the configured ``seed``), not through the proxy, so probes never appear
in traces or user statistics. The first answer per (upstream, model, prompt) becomes
its baseline; later answers are compared by exact match and, with embeddings on, by
cosine similarity. A change is an answer that is not exactly the baseline and, where a
similarity is known, is below ``min_similarity``: a ``canary_changed`` event. With
several pods only the lease holder probes (the service calls :meth:`probe_all`).

Answers are bounded (``max_tokens``, 256 KB read, ``timeout_s``); a probe failure is
counted (outcome ``error``) and logged by type only.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import time
from collections.abc import Mapping
from typing import Any

import aiohttp
import orjson

from exporters.clickhouse.drift_store import CanaryAnswer, DriftEvent, DriftStore
from sidecar import semconv as sc
from sidecar.drift.changes import event_id
from sidecar.drift.config import CanaryPrompt, CanarySettings
from sidecar.drift.embedder import Embedder
from sidecar.drift.state import DriftState

logger = logging.getLogger(__name__)

MAX_ANSWER_BYTES = 256 * 1024
CANARY_HEADER = "x-railwatch-canary"  # marks probes in the upstream's own logs


class CanaryError(Exception):
    """A probe got no usable answer (status, timeout, shape); the message holds no text."""


class CanaryProber:
    """Probes ``upstreams`` (name -> base URL without ``/v1``). Start/close own a session."""

    def __init__(self, settings: CanarySettings, upstreams: Mapping[str, str], store: DriftStore,
                 state: DriftState, *, pod: str, embedder: Embedder | None = None) -> None:
        self.settings = settings
        self.upstreams = dict(upstreams)
        self.store = store
        self.state = state
        self.pod = pod
        self.embedder = embedder
        self.last_probe = 0.0
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        timeout = aiohttp.ClientTimeout(total=self.settings.timeout_s)
        self._session = aiohttp.ClientSession(timeout=timeout)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def due(self, now: float) -> bool:
        return bool(self.settings.prompts) and now - self.last_probe >= self.settings.interval_s

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json", CANARY_HEADER: "1"}
        env = self.settings.api_key_env
        key = os.environ.get(env) if env else None
        if key:
            headers["Authorization"] = f"Bearer {key}"
        return headers

    async def _model(self, base: str) -> str:
        if self.settings.model:
            return self.settings.model
        data = await self._get_json(f"{base}/v1/models")
        models = data.get("data") if isinstance(data, dict) else None
        if not isinstance(models, list) or not models or not isinstance(models[0], dict):
            raise CanaryError("the upstream lists no model")
        return str(models[0].get("id", ""))

    async def _get_json(self, url: str, body: dict[str, Any] | None = None) -> Any:
        assert self._session is not None, "start() first"
        method = "POST" if body is not None else "GET"
        payload = orjson.dumps(body) if body is not None else None
        try:
            async with self._session.request(method, url, data=payload,
                                             headers=self._headers()) as resp:
                raw = await resp.content.read(MAX_ANSWER_BYTES + 1)
                if resp.status != 200:
                    raise CanaryError(f"HTTP {resp.status}")
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise CanaryError(type(exc).__name__) from None
        if len(raw) > MAX_ANSWER_BYTES:
            raise CanaryError("answer over 256 KB")
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise CanaryError("answer is not JSON") from None

    async def ask(self, base: str, model: str, prompt: CanaryPrompt) -> tuple[str, str]:
        """(answer text, system_fingerprint) of one probe; raises CanaryError."""
        messages = [{"role": "user", "content": prompt.prompt}]
        if prompt.system:
            messages.insert(0, {"role": "system", "content": prompt.system})
        body = {"model": model, "messages": messages, "temperature": 0,
                "seed": self.settings.seed, "max_tokens": prompt.max_tokens, "stream": False}
        data = await self._get_json(f"{base}/v1/chat/completions", body)
        try:
            text = data["choices"][0]["message"]["content"] or ""
        except (KeyError, IndexError, TypeError):
            raise CanaryError("answer without choices[0].message.content") from None
        return str(text), str(data.get("system_fingerprint") or "")

    async def probe_all(self, now: float | None = None) -> list[DriftEvent]:
        """Every prompt against every upstream once; returns the change events raised."""
        self.last_probe = time.time() if now is None else now
        events = []
        for name, base in self.upstreams.items():
            try:
                model = await self._model(base)
            except CanaryError as exc:
                self.state.bump(self.state.canary_probes, (name, "error"), len(self.settings.prompts))
                logger.warning("canary probe of upstream %s failed: %s", name, exc)
                continue
            for prompt in self.settings.prompts:
                try:
                    answer, fingerprint = await self.ask(base, model, prompt)
                except CanaryError as exc:
                    self.state.bump(self.state.canary_probes, (name, "error"))
                    logger.warning("canary %s on upstream %s failed: %s", prompt.id, name, exc)
                    continue
                event = await asyncio.to_thread(self._compare, name, model, prompt.id, answer,
                                                fingerprint)
                if event is not None:
                    events.append(event)
        return events

    def _compare(self, upstream: str, model: str, prompt_id: str, answer: str,
                 fingerprint: str) -> DriftEvent | None:
        """Store the answer; compare with the baseline; store and log a change. Blocks."""
        ahash = hashlib.blake2b(answer.encode("utf-8", "replace"), digest_size=16).hexdigest()
        vector = self.embedder.embed([answer])[0] if self.embedder is not None else []
        baseline = self.store.canary_baseline(upstream, model, prompt_id)
        now = time.time()
        if baseline is None:
            self.store.insert_canary(CanaryAnswer(now, upstream, model, prompt_id, answer, ahash,
                                                  vector, fingerprint, 1.0, True, True, self.pod))
            self.state.bump(self.state.canary_probes, (upstream, "baseline"))
            return None
        exact = ahash == baseline.answer_hash
        similarity = None
        if vector and baseline.embedding:
            similarity = float(sum(a * b for a, b in zip(vector, baseline.embedding, strict=False)))
        changed = not exact and (similarity is None or similarity < self.settings.min_similarity)
        self.store.insert_canary(CanaryAnswer(now, upstream, model, prompt_id, answer, ahash,
                                              vector, fingerprint, similarity, exact, False, self.pod))
        self.state.canary_similarity[(upstream, prompt_id)] = (
            similarity if similarity is not None else (1.0 if exact else 0.0))
        self.state.bump(self.state.canary_probes, (upstream, "changed" if changed else "same"))
        if not changed:
            return None
        sim = f"{similarity:.3f}" if similarity is not None else "n/a"
        event = DriftEvent(
            event_id=event_id(sc.DRIFT_EVENT_CANARY, upstream, model, prompt_id, ahash),
            ts=now, kind=sc.DRIFT_EVENT_CANARY, model=model, route=sc.OP_CHAT, upstream=upstream,
            subject=prompt_id, old_value=baseline.answer_hash, new_value=ahash,
            detail=f"similarity {sim} (min {self.settings.min_similarity}), "
                   f"fingerprint {baseline.system_fingerprint or '-'} -> {fingerprint or '-'}",
            pod=self.pod)
        self.store.insert_events([event])
        self.state.note_events([event])
        return event

"""Model, fingerprint and system prompt changes, raised the moment a record shows one.

:class:`ChangeTracker` remembers, per key, the values already seen: served models per
requested model and route, ``system_fingerprint`` values per served model, system
prompt hashes per model and route. A value never seen for a key that already had one
is an event; the first value of a key is the baseline, not a change. Sets of values
(not the last value) so that a fleet answering from two fingerprints alternately does
not raise an event per request. Seeded from ClickHouse at start, so a restart or a new
pod does not re-announce what the fleet already saw; an event's id is a hash of what
changed, so N pods seeing one change store one event. Bounded in keys and values.
Not thread-safe: one drift worker thread owns it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from exporters.clickhouse.drift_store import DriftEvent
from sidecar import semconv as sc
from sidecar.record import TraceRecord

MAX_KEYS = 10_000
MAX_VALUES = 1_000

_KINDS = {
    "model": sc.DRIFT_EVENT_MODEL,
    "fingerprint": sc.DRIFT_EVENT_FINGERPRINT,
    "system_prompt": sc.DRIFT_EVENT_SYSTEM_PROMPT,
}


def event_id(*parts: str) -> str:
    return hashlib.blake2b("\x1f".join(parts).encode("utf-8", "replace"),
                           digest_size=16).hexdigest()


class ChangeTracker:
    def __init__(self, pod: str = "") -> None:
        self.pod = pod
        self._seen: dict[tuple[str, str, str], dict[str, None]] = {}  # insertion-ordered sets
        self.overflow = 0  # values not tracked because a bound was reached

    def seed(self, known: Iterable[tuple[str, str, str, str]]) -> None:
        """Values the fleet already saw: (kind, key model, route, value)."""
        for kind, model, route, value in known:
            if kind in _KINDS and value:
                self._add((kind, model, route), value)

    def _add(self, key: tuple[str, str, str], value: str) -> str | None:
        """Record ``value``; returns the previous latest value if this one is new, else None.

        ``""`` is returned for the first value of a key (a baseline, not a change).
        """
        values = self._seen.get(key)
        if values is None:
            if len(self._seen) >= MAX_KEYS:
                self.overflow += 1
                return None
            self._seen[key] = {value: None}
            return ""
        if value in values:
            return None
        previous = next(reversed(values))
        if len(values) >= MAX_VALUES:
            self.overflow += 1
            values.pop(next(iter(values)))
        values[value] = None
        return previous

    def observe(self, record: TraceRecord) -> list[DriftEvent]:
        """Events this record reveals (usually none). Never raises."""
        if record.status >= 400 or record.route not in (sc.OP_CHAT, sc.OP_TEXT_COMPLETION):
            return []
        served = record.model_served or ""
        requested = record.model_requested or served
        route = record.route
        checks = [("model", requested, served)]
        if record.system_fingerprint:
            checks.append(("fingerprint", served, record.system_fingerprint))
        system = record.attributes.get(sc.RAILWATCH_SYSTEM_PROMPT_HASH)
        if system:
            checks.append(("system_prompt", served, system))
        events = []
        for kind, model, value in checks:
            if not value:
                continue
            previous = self._add((kind, model, route), value)
            if not previous:  # None: known; "": the key's first value
                continue
            detail = ""
            if kind == "system_prompt":
                chars = record.attributes.get(sc.RAILWATCH_SYSTEM_PROMPT_CHARS, "")
                detail = f"system prompt of {chars} characters"
            events.append(DriftEvent(
                event_id=event_id(_KINDS[kind], model, route, value),
                ts=record.ended_at,
                kind=_KINDS[kind],
                model=model,
                route=route,
                upstream=record.upstream,
                subject=kind,
                old_value=previous,
                new_value=value,
                detail=detail,
                pod=self.pod,
            ))
        return events

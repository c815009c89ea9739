"""Every ClickHouse read and write of drift tracking, behind one small class.

:class:`DriftStore` owns no client. It takes ``run(fn)``, which calls
``fn(client, database)`` and returns its result: the ClickHouse exporter's
``store.run`` inside a sidecar (one chDB engine per process, owned by that exporter,
calls serialised with its inserts), or :meth:`DriftStore.for_client` around a client of
its own (the CLI, a CronJob). Every method blocks on one or two queries: call them from
a worker thread. Driver errors propagate (``ClickHouseError``); nothing here logs text.

The tables are created by migration 5 (:mod:`.drift_schema`). Timestamps are epoch
seconds (float) on the Python side.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

from clickhouse_connect.driver.client import Client

from sidecar.timestamps import epoch_seconds

T = TypeVar("T")


class QueryRunner(Protocol):
    """``run(fn)`` calls ``fn(client, database)`` (serialised with other users); blocks."""

    def __call__(self, fn: Callable[[Client, str], T], /) -> T: ...


@dataclass(frozen=True, slots=True)
class RequestFeatures:
    """One sampled request's drift features (``drift_requests``)."""

    ts: float
    request_id: str
    pod: str
    upstream: str
    route: str
    model: str
    model_requested: str
    system_fingerprint: str
    system_prompt_hash: str
    system_prompt_chars: int
    prompt_hash: str
    prompt_chars: int
    num: Mapping[str, float]
    cat: Mapping[str, str]
    embedding: Sequence[float] = ()
    example: str | None = None  # only where the privacy setting allows stored text


@dataclass(frozen=True, slots=True)
class DriftEvent:
    """A change seen at once (``drift_events``); ``event_id`` makes N pods' copies one row."""

    event_id: str
    ts: float
    kind: str  # semconv DRIFT_EVENT_* value
    model: str
    route: str
    upstream: str
    subject: str  # what changed: "system_fingerprint", a prompt hash, a canary id, a metric
    old_value: str
    new_value: str
    detail: str = ""
    pod: str = ""


@dataclass(frozen=True, slots=True)
class WindowResult:
    """One statistic of one metric, current window against its reference (``drift_windows``)."""

    window_start: float
    window_end: float
    reference_start: float
    reference_end: float
    model: str
    route: str
    metric: str
    statistic: str  # "ks" | "chi2" | "mmd"
    value: float  # the effect size (KS D, Jensen-Shannon distance, MMD²)
    threshold: float  # the significance level the p-value is held to (after correction)
    p_value: float | None
    n_reference: int
    n_current: int
    drifted: bool
    explanation: str = ""


@dataclass(frozen=True, slots=True)
class CanaryAnswer:
    ts: float
    upstream: str
    model: str
    prompt_id: str
    answer: str  # canary prompts are ours, not users': their answers are stored
    answer_hash: str
    embedding: Sequence[float]
    system_fingerprint: str
    similarity: float | None
    exact: bool | None
    is_baseline: bool
    pod: str = ""


@dataclass(slots=True)
class WindowSample:
    """The rows of one (model, route) in one time range, as columns."""

    ts: list[float] = field(default_factory=list)
    num: list[dict[str, float]] = field(default_factory=list)
    cat: list[dict[str, str]] = field(default_factory=list)
    embeddings: list[list[float]] = field(default_factory=list)
    examples: list[tuple[str | None, str, int]] = field(default_factory=list)  # per embedding

    def __len__(self) -> int:
        return len(self.ts)


_REQ_COLS = ("ts", "request_id", "pod", "upstream", "route", "model", "model_requested",
             "system_fingerprint", "system_prompt_hash", "system_prompt_chars", "prompt_hash",
             "prompt_chars", "num", "cat", "embedding", "example")
_EVENT_COLS = ("event_id", "ts", "kind", "model", "route", "upstream", "subject", "old_value",
               "new_value", "detail", "pod")
_WINDOW_COLS = ("window_start", "window_end", "reference_start", "reference_end", "model",
                "route", "metric", "statistic", "value", "threshold", "p_value", "n_reference",
                "n_current", "drifted", "explanation", "computed_at", "version")
_CANARY_COLS = ("ts", "upstream", "model", "prompt_id", "answer", "answer_hash", "embedding",
                "system_fingerprint", "similarity", "exact", "is_baseline", "pod")


def _dt(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


class DriftStore:
    """The drift tables (see the module docstring). Thread-safe if ``run`` is."""

    def __init__(self, run: QueryRunner) -> None:
        self._run = run

    @classmethod
    def for_client(cls, client: Client, database: str) -> DriftStore:
        """A store over a client of its own; calls are serialised by a lock."""
        lock = threading.Lock()

        def run(fn: Callable[[Client, str], T]) -> T:
            with lock:
                return fn(client, database)

        return cls(run)

    # -- writes ------------------------------------------------------------------------

    def insert_requests(self, rows: Sequence[RequestFeatures]) -> None:
        if not rows:
            return
        data = [[_dt(r.ts), r.request_id, r.pod, r.upstream, r.route, r.model,
                 r.model_requested, r.system_fingerprint, r.system_prompt_hash,
                 r.system_prompt_chars, r.prompt_hash, r.prompt_chars, dict(r.num),
                 dict(r.cat), list(r.embedding), r.example] for r in rows]
        self._run(lambda c, db: c.insert(f"{db}.drift_requests", data, column_names=_REQ_COLS))

    def insert_events(self, events: Sequence[DriftEvent]) -> None:
        if not events:
            return
        data = [[e.event_id, _dt(e.ts), e.kind, e.model, e.route, e.upstream, e.subject,
                 e.old_value, e.new_value, e.detail, e.pod] for e in events]
        self._run(lambda c, db: c.insert(f"{db}.drift_events", data, column_names=_EVENT_COLS))

    def insert_windows(self, results: Sequence[WindowResult]) -> None:
        if not results:
            return
        now = time.time()
        version = time.time_ns() // 1000
        data = [[_dt(w.window_start), _dt(w.window_end), _dt(w.reference_start),
                 _dt(w.reference_end), w.model, w.route, w.metric, w.statistic, w.value,
                 w.threshold, w.p_value, w.n_reference, w.n_current, w.drifted, w.explanation,
                 _dt(now), version] for w in results]
        self._run(lambda c, db: c.insert(f"{db}.drift_windows", data, column_names=_WINDOW_COLS))

    def insert_canary(self, answer: CanaryAnswer) -> None:
        a = answer
        data = [[_dt(a.ts), a.upstream, a.model, a.prompt_id, a.answer, a.answer_hash,
                 list(a.embedding), a.system_fingerprint, a.similarity, a.exact, a.is_baseline,
                 a.pod]]
        self._run(lambda c, db: c.insert(f"{db}.drift_canaries", data, column_names=_CANARY_COLS))

    def set_baseline(self, ref_from: float, ref_to: float, model: str = "") -> None:
        """Pin ``[ref_from, ref_to)`` as the reference of ``model`` ("" for every model)."""
        data = [["default", model, _dt(ref_from), _dt(ref_to), _dt(time.time()),
                 time.time_ns() // 1000]]
        self._run(lambda c, db: c.insert(
            f"{db}.drift_baselines", data,
            column_names=("name", "model", "ref_from", "ref_to", "created_at", "version")))

    def clear_baseline(self, model: str = "") -> None:
        """Back to window-vs-window: a pin with an empty range means 'none'."""
        self.set_baseline(0.0, 0.0, model)

    # -- reads -------------------------------------------------------------------------

    def baselines(self) -> dict[str, tuple[float, float]]:
        """model ("" = all) -> pinned [from, to); unpinned models are absent."""
        rows = self._run(lambda c, db: c.query(
            f"SELECT model, argMax(ref_from, version), argMax(ref_to, version) "
            f"FROM {db}.drift_baselines WHERE name = 'default' GROUP BY model").result_rows)
        out = {}
        for model, start, end in rows:
            s, e = epoch_seconds(start), epoch_seconds(end)
            if e > s:
                out[str(model)] = (s, e)
        return out

    def known_values(self, limit: int = 10_000) -> list[tuple[str, str, str, str]]:
        """(kind, model, route, value) already seen: served models per requested model,
        fingerprints per model, system prompt hashes per model and route. Bounded."""
        sql = """
SELECT 'model' AS k, model_requested, route, model FROM {db}.drift_requests
  GROUP BY model_requested, route, model
UNION ALL
SELECT 'fingerprint', model, route, system_fingerprint FROM {db}.drift_requests
  WHERE system_fingerprint != '' GROUP BY model, route, system_fingerprint
UNION ALL
SELECT 'system_prompt', model, route, system_prompt_hash FROM {db}.drift_requests
  WHERE system_prompt_hash != '' GROUP BY model, route, system_prompt_hash
LIMIT {limit}"""
        rows = self._run(lambda c, db: c.query(sql.format(db=db, limit=int(limit))).result_rows)
        return [(str(a), str(b), str(c), str(d)) for a, b, c, d in rows]

    def groups(self, start: float, end: float) -> list[tuple[str, str, int]]:
        """(model, route, rows) with rows in ``[start, end)``."""
        rows = self._run(lambda c, db: c.query(
            f"SELECT model, route, count() FROM {db}.drift_requests "
            "WHERE ts >= {s:DateTime64(3)} AND ts < {e:DateTime64(3)} "
            "GROUP BY model, route ORDER BY model, route",
            parameters={"s": _dt(start), "e": _dt(end)}).result_rows)
        return [(str(m), str(r), int(n)) for m, r, n in rows]

    def window(self, model: str, route: str, start: float, end: float, *,
               max_rows: int, max_embeddings: int) -> WindowSample:
        """A uniform sample (by request id) of at most ``max_rows`` rows of ``[start, end)``,
        with at most ``max_embeddings`` embeddings (and their examples)."""
        params = {"m": model, "r": route, "s": _dt(start), "e": _dt(end)}
        where = ("model = {m:String} AND route = {r:String} AND ts >= {s:DateTime64(3)} "
                 "AND ts < {e:DateTime64(3)}")
        rows = self._run(lambda c, db: c.query(
            f"SELECT ts, num, cat FROM {db}.drift_requests WHERE {where} "
            f"ORDER BY cityHash64(request_id) LIMIT {int(max_rows)}",
            parameters=params).result_rows)
        sample = WindowSample()
        for ts, num, cat in rows:
            sample.ts.append(epoch_seconds(ts))
            sample.num.append(dict(num))
            sample.cat.append(dict(cat))
        if max_embeddings > 0:
            emb = self._run(lambda c, db: c.query(
                f"SELECT embedding, example, prompt_hash, prompt_chars FROM {db}.drift_requests "
                f"WHERE {where} AND notEmpty(embedding) "
                f"ORDER BY cityHash64(request_id) LIMIT {int(max_embeddings)}",
                parameters=params).result_rows)
            for vec, example, phash, chars in emb:
                sample.embeddings.append(list(vec))
                sample.examples.append((example, str(phash), int(chars)))
        return sample

    def canary_baseline(self, upstream: str, model: str, prompt_id: str) -> CanaryAnswer | None:
        rows = self._run(lambda c, db: c.query(
            f"SELECT ts, answer, answer_hash, embedding, system_fingerprint "
            f"FROM {db}.drift_canaries WHERE upstream = {{u:String}} AND model = {{m:String}} "
            "AND prompt_id = {p:String} AND is_baseline ORDER BY ts DESC LIMIT 1",
            parameters={"u": upstream, "m": model, "p": prompt_id}).result_rows)
        if not rows:
            return None
        ts, answer, ahash, emb, fp = rows[0]
        return CanaryAnswer(epoch_seconds(ts), upstream, model, prompt_id, str(answer), str(ahash),
                            list(emb), str(fp), None, None, True)

    def acquire_lease(self, name: str, holder: str, ttl_s: float) -> bool:
        """Take or renew the lease ``name`` for ``ttl_s`` seconds; ``True`` if ``holder`` has it.

        Compare-and-set over a ``ReplacingMergeTree``: read the holder, write ours when
        free, expired or already ours, read back. Two pods racing in the same instant can
        both win once; every job the lease guards is idempotent (windows and events are
        keyed), so that costs a repeated computation, never a wrong answer.
        """
        def current(c: Client, db: str) -> tuple[str, float] | None:
            rows = c.query(
                f"SELECT argMax(holder, version), argMax(expires_at, version) "
                f"FROM {db}.drift_leases WHERE name = {{n:String}} HAVING count() > 0",
                parameters={"n": name}).result_rows
            return (str(rows[0][0]), epoch_seconds(rows[0][1])) if rows else None

        now = time.time()
        held = self._run(current)
        if held is not None and held[0] != holder and held[1] > now:
            return False
        data = [[name, holder, _dt(now + ttl_s), time.time_ns() // 1000]]
        self._run(lambda c, db: c.insert(f"{db}.drift_leases", data,
                                         column_names=("name", "holder", "expires_at", "version")))
        after = self._run(current)
        return after is not None and after[0] == holder

    # -- report ------------------------------------------------------------------------

    def window_history(self, since: float, model: str | None = None) -> list[dict[str, Any]]:
        """Every stored window result since ``since`` (latest version each), oldest first."""
        where = "window_end >= {s:DateTime64(3)}" + (" AND model = {m:String}" if model else "")
        rows = self._run(lambda c, db: c.query(
            f"SELECT * FROM {db}.drift_windows FINAL WHERE {where} "
            "ORDER BY window_end, model, route, metric",
            parameters={"s": _dt(since), "m": model or ""}).named_results())
        return [dict(r) for r in rows]

    def events(self, since: float, model: str | None = None, limit: int = 200) -> list[dict[str, Any]]:
        where = "ts >= {s:DateTime64(3)}" + (" AND model = {m:String}" if model else "")
        rows = self._run(lambda c, db: c.query(
            f"SELECT * FROM {db}.drift_events FINAL WHERE {where} ORDER BY ts DESC "
            f"LIMIT {int(limit)}", parameters={"s": _dt(since), "m": model or ""}
        ).named_results())
        return [dict(r) for r in rows]

    def system_prompts(self, since: float, model: str | None = None) -> list[dict[str, Any]]:
        """Distinct system prompts by hash: first/last seen, length, share of sampled traffic."""
        where = "ts >= {s:DateTime64(3)}" + (" AND model = {m:String}" if model else "")
        rows = self._run(lambda c, db: c.query(
            f"SELECT model, route, system_prompt_hash AS hash, any(system_prompt_chars) AS chars, "
            f"min(ts) AS first_seen, max(ts) AS last_seen, count() AS requests, "
            f"count() / sum(count()) OVER (PARTITION BY model, route) AS share "
            f"FROM {db}.drift_requests WHERE {where} GROUP BY model, route, hash "
            f"ORDER BY model, route, requests DESC LIMIT 200",
            parameters={"s": _dt(since), "m": model or ""}).named_results())
        return [dict(r) for r in rows]

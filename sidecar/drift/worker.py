"""The drift worker: an exporter fed finished trace records in batches, off the request path.

:class:`DriftExporter` plugs into the export pipeline like any exporter (its
``BatchProcessor`` thread calls :meth:`export`), so the request path only pays the
pipeline's ``submit``. Per batch it:

1. shows every record to the :class:`~sidecar.drift.changes.ChangeTracker` (served
   model, ``system_fingerprint``, system prompt changes are events at once);
2. samples records (``drift.sample_rate``, deterministic by request id, then at most
   ``drift.max_rows_per_s`` a second, drawn uniformly from each batch) and computes
   their scalar features (:mod:`.features`). The cap bounds the worker's CPU and the
   rows stored whatever the traffic: at 20 rows/s a window of an hour holds 72,000;
   the tests need a few hundred;
3. embeds a sub-sample of their prompts in batches when embeddings are on, within a
   per-second budget (past it rows are stored without an embedding, counted);
4. stores the batch's events and rows, one insert each, counting and logging each
   event.

Batches are few and large (:meth:`batch_preference`: up to ``INSERT_MAX_ROWS`` records,
at least every ``drift.insert_max_age_s``; each insert makes a ClickHouse part, and parts
cost merges), so records wait in the batch processor's queue, where the crash journal
still holds them, not in a buffer of this exporter's own. The rate budgets allow a
burst of one batch interval.

``export`` never raises: a storage failure is counted (``skipped{reason="store"}``),
logged, those rows are dropped (they are samples; no spill log) and ``FAILURE``
returned. Text reaches storage only as the ``example`` column, and only when
``store_text`` (the ClickHouse exporter's setting and the privacy mode allow it).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Sequence
from typing import TypeVar

from exporters.base import BatchPreference, ExportResult
from exporters.clickhouse.drift_store import DriftEvent, DriftStore, RequestFeatures
from sidecar.drift.changes import ChangeTracker
from sidecar.drift.config import DriftSettings
from sidecar.drift.embedder import Embedder
from sidecar.drift.features import ROUTES, Features, features, sampled
from sidecar.drift.state import DriftState
from sidecar.record import TraceRecord

logger = logging.getLogger("railwatch.drift")

T = TypeVar("T")

EXAMPLE_CHARS = 300  # of the prompt, in drift_requests.example, when text may be stored
INSERT_MAX_ROWS = 2000  # rows buffered before an insert, whatever insert_max_age_s says


class _Bucket:
    """A token bucket: ``rate`` items a second, bursts up to ``burst_s`` seconds' worth."""

    def __init__(self, rate: float, burst_s: float = 2.0) -> None:
        self.rate = rate
        self.burst = burst_s * rate
        self.tokens = rate
        self.at = time.monotonic()

    def take(self, rng: random.Random, items: list[T]) -> list[T]:
        """As many of ``items`` as the bucket allows, drawn uniformly, in their order."""
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        n = min(len(items), int(self.tokens))
        self.tokens -= n
        if n == len(items):
            return items
        return [items[i] for i in sorted(rng.sample(range(len(items)), n))]


class DriftExporter:
    """See the module docstring. ``start()`` blocks (seeding, model load)."""

    name = "drift"

    def __init__(self, settings: DriftSettings, store: DriftStore, state: DriftState, *,
                 pod: str, store_text: bool, embedder: Embedder | None = None) -> None:
        self.settings = settings
        self.store = store
        self.counters = state
        self.pod = pod
        self.store_text = store_text
        self.embedder = embedder
        self.tracker = ChangeTracker(pod)
        burst_s = max(2.0, settings.insert_max_age_s)  # a batch comes at least this often
        self._rows = _Bucket(settings.max_rows_per_s, burst_s)
        self._embeds = _Bucket(settings.embeddings.max_per_s, burst_s)
        self._rng = random.Random()

    def batch_preference(self) -> BatchPreference:
        """Few, large inserts: ``INSERT_MAX_ROWS`` records at most, every
        ``drift.insert_max_age_s`` at least."""
        return BatchPreference(INSERT_MAX_ROWS, self.settings.insert_max_age_s)

    def start(self) -> None:
        """Seed the change tracker from storage; load the embedder. Blocks; may raise."""
        self.tracker.seed(self.store.known_values())
        if self.embedder is not None:
            self.embedder.start()

    def export(self, batch: Sequence[TraceRecord]) -> ExportResult:
        try:
            events: list[DriftEvent] = []
            candidates: list[TraceRecord] = []
            for record in batch:
                events.extend(self.tracker.observe(record))
                if (record.route in ROUTES and record.status < 400
                        and sampled(record.request_id, self.settings.sample_rate)):
                    candidates.append(record)
            kept = self._rows.take(self._rng, candidates)
            if len(kept) < len(candidates):
                self.counters.bump(self.counters.skipped, "rate", len(candidates) - len(kept))
            chars = self.settings.embeddings.max_chars
            chosen = [(record, features(record, chars)) for record in kept]
            vectors = self._embed(chosen)
            rows = [self._row(r, f, vectors.get(i, ())) for i, (r, f) in enumerate(chosen)]
            self.store.insert_events(events)
        except Exception as exc:  # noqa: BLE001 - an exporter never raises; counted
            self.counters.bump(self.counters.skipped, "store", len(batch))
            logger.error("drift worker failed on a batch of %d: %s", len(batch),
                         type(exc).__name__)
            return ExportResult.FAILURE
        self.counters.note_events(events)
        if not rows:
            return ExportResult.SUCCESS
        try:
            self.store.insert_requests(rows)
        except Exception as exc:  # noqa: BLE001 - samples are not worth a spill log
            self.counters.bump(self.counters.skipped, "store", len(rows))
            logger.error("drift worker could not store %d rows: %s", len(rows),
                         type(exc).__name__)
            return ExportResult.FAILURE
        self.counters.sampled += len(rows)
        return ExportResult.SUCCESS

    def _embed(self, chosen: Sequence[tuple[TraceRecord, Features]]) -> dict[int, list[float]]:
        emb = self.settings.embeddings
        if self.embedder is None or not chosen:
            return {}
        wanted = [i for i, (r, f) in enumerate(chosen)
                  if f.user_text and sampled(r.request_id[8:], emb.sample_rate)]
        allowed = self._embeds.take(self._rng, wanted)
        if len(allowed) < len(wanted):
            self.counters.bump(self.counters.skipped, "embedding_budget",
                               len(wanted) - len(allowed))
        if not allowed:
            return {}
        texts = [chosen[i][1].user_text or "" for i in allowed]
        vectors = self.embedder.embed(texts)
        self.counters.embedded += len(vectors)
        return dict(zip(allowed, vectors, strict=True))

    def _row(self, record: TraceRecord, f: Features, vector: Sequence[float]) -> RequestFeatures:
        example = None
        if self.store_text and vector and f.user_text:
            example = f.user_text[:EXAMPLE_CHARS]
        return RequestFeatures(
            ts=record.started_at, request_id=record.request_id, pod=self.pod,
            upstream=record.upstream, route=record.route, model=f.model,
            model_requested=record.model_requested or f.model,
            system_fingerprint=record.system_fingerprint or "",
            system_prompt_hash=f.system_prompt_hash, system_prompt_chars=f.system_prompt_chars,
            prompt_hash=f.prompt_hash, prompt_chars=f.prompt_chars, num=f.num, cat=f.cat,
            embedding=vector, example=example,
        )

    def force_flush(self, timeout_s: float = 10.0) -> bool:
        """Nothing is held here (the batch processor drains its queue first)."""
        return True

    def shutdown(self, timeout_s: float = 10.0) -> None:
        """Nothing to write (the batch processor exported what was queued)."""

"""What the drift components count and last computed: read by ``/metrics`` and ``/readyz``.

One :class:`DriftState` per sidecar, written by the drift worker thread and the drift
service, read by scrapes; every update is a single assignment or ``+=`` on an int
under the GIL, and readers copy. :meth:`samples` is the Prometheus state source.
:meth:`DriftState.note_events` is the one place a drift event is counted and logged.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from exporters.clickhouse.drift_store import DriftEvent, WindowResult
from exporters.prometheus.state import StateSample
from sidecar import semconv as sc

logger = logging.getLogger("railwatch.drift")

MAX_SERIES = 2000  # window gauges kept (model x route x metric), oldest dropped first


@dataclass
class DriftState:
    sampled: int = 0
    embedded: int = 0
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> count
    events: dict[str, int] = field(default_factory=dict)  # kind -> count
    runs: dict[str, int] = field(default_factory=dict)  # outcome -> count
    last_run: float = 0.0
    windows: dict[tuple[str, str, str, str], WindowResult] = field(default_factory=dict)
    canary_similarity: dict[tuple[str, str], float] = field(default_factory=dict)
    canary_probes: dict[tuple[str, str], int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def bump(self, table: dict[Any, int], key: Any, n: int = 1) -> None:
        with self._lock:
            table[key] = table.get(key, 0) + n

    def note_events(self, events: Iterable[DriftEvent]) -> None:
        """Count each event (``railwatch_drift_events{kind}``) and log it: a ``WARNING``
        line of names, hashes and values, never text. Never raises."""
        for event in events:
            self.bump(self.events, event.kind)
            logger.warning(
                "drift event %s: model=%s route=%s upstream=%s %s %r -> %r %s",
                event.kind, event.model, event.route, event.upstream, event.subject,
                event.old_value, event.new_value, event.detail,
                extra={sc.RAILWATCH_DRIFT_KIND: event.kind},
            )

    def record_windows(self, results: Sequence[WindowResult]) -> None:
        with self._lock:
            for r in results:
                key = (r.model, r.route, r.metric, r.statistic)
                self.windows.pop(key, None)
                self.windows[key] = r
            while len(self.windows) > MAX_SERIES:
                self.windows.pop(next(iter(self.windows)))

    def samples(self) -> Iterator[StateSample]:
        """The ``railwatch_drift_*`` samples (Prometheus state source; cheap, no I/O)."""
        with self._lock:
            windows = list(self.windows.values())
            skipped, events, runs = dict(self.skipped), dict(self.events), dict(self.runs)
            sims, probes = dict(self.canary_similarity), dict(self.canary_probes)
        yield StateSample(sc.METRIC_DRIFT_SAMPLED, float(self.sampled))
        yield StateSample(sc.METRIC_DRIFT_EMBEDDED, float(self.embedded))
        for reason, n in skipped.items():
            yield StateSample(sc.METRIC_DRIFT_SKIPPED, float(n), {sc.LABEL_REASON: reason})
        for kind in sc.DRIFT_EVENT_KINDS:
            yield StateSample(sc.METRIC_DRIFT_EVENTS, float(events.get(kind, 0)),
                              {sc.LABEL_KIND: kind})
        for outcome, n in runs.items():
            yield StateSample(sc.METRIC_DRIFT_RUNS, float(n), {sc.LABEL_OUTCOME: outcome})
        if self.last_run:
            yield StateSample(sc.METRIC_DRIFT_LAST_RUN, self.last_run)
        for r in windows:
            labels = {sc.LABEL_MODEL: r.model, sc.LABEL_ROUTE: r.route,
                      sc.LABEL_METRIC: r.metric, sc.LABEL_STATISTIC: r.statistic}
            yield StateSample(sc.METRIC_DRIFT_STATISTIC, r.value, labels)
            if r.p_value is not None:
                yield StateSample(sc.METRIC_DRIFT_P_VALUE, r.p_value, labels)
            yield StateSample(sc.METRIC_DRIFT_DRIFTED, 1.0 if r.drifted else 0.0, labels)
        for (upstream, prompt), sim in sims.items():
            yield StateSample(sc.METRIC_DRIFT_CANARY_SIMILARITY, sim,
                              {sc.LABEL_UPSTREAM: upstream, sc.LABEL_PROMPT: prompt})
        for (upstream, outcome), n in probes.items():
            yield StateSample(sc.METRIC_DRIFT_CANARY_PROBES, float(n),
                              {sc.LABEL_UPSTREAM: upstream, sc.LABEL_OUTCOME: outcome})

    def snapshot(self) -> dict[str, Any]:
        """A small JSON-able dict for ``/readyz``."""
        with self._lock:
            drifted = sum(1 for r in self.windows.values() if r.drifted)
            return {"sampled": self.sampled, "embedded": self.embedded,
                    "skipped": dict(self.skipped), "events": dict(self.events),
                    "runs": dict(self.runs), "last_run": self.last_run,
                    "drifted_series": drifted}

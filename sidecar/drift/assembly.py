"""Building the drift components of one sidecar from its settings (no I/O here).

The app calls :func:`build_drift` once; the result's exporter joins the export pipeline
(after the ClickHouse exporter, whose client it shares), its service starts after the
exporters and stops before them, and its state is a Prometheus source.
"""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING

from exporters.clickhouse.drift_store import DriftStore
from sidecar.drift.canary import CanaryProber
from sidecar.drift.embedder import Embedder
from sidecar.drift.service import DriftService
from sidecar.drift.state import DriftState
from sidecar.drift.worker import DriftExporter
from sidecar.settings import Settings

if TYPE_CHECKING:
    from exporters.clickhouse.exporter import ClickHouseExporter

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class DriftParts:
    exporter: DriftExporter
    service: DriftService | None  # None with run_in_sidecar: false (a CronJob computes)
    state: DriftState


def pod_name(settings: Settings) -> str:
    return settings.drift.pod or os.environ.get("HOSTNAME") or socket.gethostname()


def build_drift(
    settings: Settings, clickhouse: ClickHouseExporter | None
) -> DriftParts | None:
    """The drift parts, or ``None`` when drift is off or there is no ClickHouse exporter
    (drift keeps its rows in the exporter's store)."""
    cfg = settings.drift
    if not cfg.enabled:
        return None
    if clickhouse is None:
        logger.info("drift tracking is off: it stores its rows in ClickHouse and no "
                    "clickhouse exporter is configured")
        return None
    store = DriftStore(clickhouse.store.run)
    store_text = clickhouse.store.store_text and settings.privacy.capture != "none"
    state = DriftState()
    pod = pod_name(settings)
    embedder = None
    if cfg.embeddings.enabled:
        embedder = Embedder(device=cfg.embeddings.device, batch_size=cfg.embeddings.batch_size,
                            threads=settings.guardrails.torch_threads)
    exporter = DriftExporter(cfg, store, state, pod=pod, store_text=store_text,
                             embedder=embedder)
    service = None
    if cfg.run_in_sidecar:
        canary = None
        if cfg.canaries.enabled and cfg.canaries.prompts:
            upstreams = {"primary": settings.upstream.url or ""}
            upstreams.update({n: u.url or "" for n, u in settings.fallback_upstreams.items()})
            canary = CanaryProber(cfg.canaries, upstreams, store, state, pod=pod,
                                  embedder=embedder)
        service = DriftService(cfg, store, state, pod=pod, store_text=store_text, canary=canary)
    return DriftParts(exporter, service, state)

"""Application factory and lifespan.

``create_app`` builds every service first (exporters and the ClickHouse store,
privacy, the record intake, feedback storage and signals, the guard, the hand-off
service, the proxy)
and passes each to the constructors that need it; the typed
:class:`~sidecar.runtime.Runtime` holds them. They start in the app's start-up, in
dependency order, and stop in reverse at clean-up (in-flight requests finish
first, then the intake and the exporters flush). Nothing heavy happens at import
time or in constructors.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from detectors import registry as detector_registry
from detectors.base import Detector
from detectors.errors import DetectorError
from detectors.runner import DetectorRunner
from exporters import registry as exporter_registry
from exporters.base import DurableExporter, Exporter, StartableExporter, reads_text
from exporters.batch import BatchProcessor, ExportPipeline
from exporters.errors import SpillError
from exporters.journal import JournalSettings as IntakeJournal
from exporters.journal import RecordIntake
from sidecar.errors import ConfigError, StartupError
from sidecar.feedback import ImplicitSignals
from sidecar.feedback_gate import IssuedTraces
from sidecar.handoff.store import ReviewStore
from sidecar.pipeline.actions import UpstreamSet
from sidecar.pipeline.emit import Emitter
from sidecar.pipeline.guard import Guard
from sidecar.pipeline.inflight import InFlight
from sidecar.pipeline.ingress import BODY_TIMEOUT
from sidecar.pipeline.proxy import Proxy
from sidecar.pipeline.upstream import UpstreamClient, public_url
from sidecar.policy import Policy, load_policy
from sidecar.ratelimit import RateLimiter
from sidecar.privacy import (
    PRIVACY_KINDS,
    PrivacyDetectors,
    StoragePrivacy,
    SyncDetector,
    load_pseudonym_key,
    strip_text,
)
from sidecar.runtime import RUNTIME, Runtime, readiness
from sidecar.settings import ExporterSettings, Settings

if TYPE_CHECKING:
    from exporters.clickhouse.exporter import ClickHouseExporter
    from exporters.prometheus.exporter import PrometheusExporter
    from sidecar.handoff.auth import ReviewAuth
    from sidecar.handoff.service import HandoffService

__all__ = ["RUNTIME", "Runtime", "build_exporters", "build_guard", "create_app", "readiness"]

logger = logging.getLogger(__name__)


def _otel_from_environment(settings: Settings) -> bool:
    """OTLP export is switched on by the standard variables when not configured explicitly."""
    if any(spec.kind == "otel" for spec in settings.exporters):
        return False
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    return any(
        os.environ.get(name)
        for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                     "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT")
    )


def build_exporters(settings: Settings) -> list[tuple[Exporter, ExporterSettings]]:
    """Instantiate the configured exporters (cheap; they connect in ``start``).

    Besides ``settings.exporters``: ``prometheus`` when ``metrics.enabled`` (it serves
    ``/metrics``), and ``otel`` when an ``OTEL_EXPORTER_OTLP_*ENDPOINT`` is set.
    """
    from exporters.errors import ExporterConfigError

    specs = list(settings.exporters)
    if settings.metrics.enabled and not any(s.kind == "prometheus" for s in specs):
        specs.append(ExporterSettings(kind="prometheus",
                                      options={"max_models": settings.metrics.max_models}))
    if _otel_from_environment(settings):
        specs.append(ExporterSettings(kind="otel"))
    built = []
    for i, spec in enumerate(specs):
        try:
            exporter = exporter_registry.create(
                spec.kind, spec.options, data_dir=settings.data_path()
            )
        except ExporterConfigError as exc:
            raise ConfigError(f"invalid setting 'exporters.{i}': {exc}") from None
        built.append((exporter, spec))
    return built


async def start_exporters(
    pairs: Sequence[tuple[Exporter, ExporterSettings]],
    exports: ExportPipeline,
    components: dict[str, str],
) -> None:
    """Start each exporter (in a thread: ClickHouse connects and migrates there) and feed
    it from its own batch processor. Raises ``StartupError`` naming the first that fails."""
    for exporter, spec in pairs:
        key = f"exporter:{exporter.name}"
        components[key] = "starting"
        if isinstance(exporter, StartableExporter):
            try:
                result = await asyncio.to_thread(exporter.start)
                if asyncio.iscoroutine(result):
                    await result
            except Exception as exc:  # noqa: BLE001 - any exporter failure stops start-up
                components[key] = "failed"
                raise StartupError(
                    f"exporter '{exporter.name}' failed to start: {type(exc).__name__}: {exc}"
                ) from exc
        exports.add(
            BatchProcessor(
                exporter,
                max_queue=spec.max_queue,
                max_batch=spec.max_batch,
                schedule_delay_s=spec.schedule_delay_s,
            )
        )
        components[key] = "ok"


def build_guard(policy: Policy, in_flight: InFlight | None = None) -> Guard:
    """Create (not start) every detector the policy names, in a runner. ``in_flight``:
    the proxy's request counter, when the guard serves a proxy."""
    runner = DetectorRunner()
    detectors = {}
    for name, spec in policy.detectors.items():
        try:
            detector = detector_registry.create(spec.kind, spec.options, name=name)
        except DetectorError as exc:
            raise ConfigError(f"invalid policy detector '{name}': {exc}") from None
        runner.add(detector, spec.run)
        detectors[name] = detector
    return Guard(policy, runner, detectors, in_flight=in_flight)


def privacy_finder(guard: Guard | None) -> PrivacyDetectors | None:
    """The policy's PII and secrets detectors, run synchronously (blocking).

    ``privacy.capture: masked`` stores text only through these; without a PII detector
    in the policy (or one that cannot run synchronously), masked mode stores no text.
    """
    if guard is None:
        return None
    chosen: dict[str, SyncDetector] = {}
    has_pii = False
    for name, spec in guard.policy.detectors.items():
        if spec.kind not in PRIVACY_KINDS:
            continue
        detector: Detector = guard.detectors[name]
        if not isinstance(detector, SyncDetector):
            if spec.kind == "pii":
                return None  # a PII detector that cannot run here: keep no text
            continue
        has_pii = has_pii or spec.kind == "pii"
        chosen[name] = detector
    return PrivacyDetectors(chosen) if has_pii else None


def build_records(
    settings: Settings, guard: Guard | None, exports: ExportPipeline,
    exporters: Sequence[Exporter],
) -> tuple[RecordIntake, StoragePrivacy, Emitter]:
    """The path of trace records (sidecar and SDK alike): storage privacy from the
    guard's detectors, the record intake (with its crash journal when an exporter is
    durable) in front of ``exports``, and the emitter (records carry text only when one
    of ``exporters`` reads it). Reads the pseudonym key (disk)."""
    key = (b"" if settings.privacy.capture == "raw"
           else load_pseudonym_key(settings.privacy.pseudonym_key, settings.data_path()))
    privacy = StoragePrivacy(settings.privacy, privacy_finder(guard), key)
    intake = RecordIntake(
        exports,
        flush_interval_s=settings.journal.flush_interval_ms / 1000.0,
        journal=_journal(settings, exporters),
        strip_text=strip_text,
    )
    keep_text = any(reads_text(e) for e in exporters)
    return intake, privacy, Emitter(intake, privacy, keep_text=keep_text)


def _check_fallbacks(policy: Policy, settings: Settings) -> None:
    for i, route in enumerate(policy.routes):
        for j, target in enumerate(route.fallback):
            if target.upstream not in (None, "primary") and (
                target.upstream not in settings.fallback_upstreams
            ):
                known = ", ".join(sorted(settings.fallback_upstreams)) or "none"
                raise ConfigError(
                    f"invalid policy key 'routes.{i}.fallback.{j}.upstream': unknown upstream "
                    f"'{target.upstream}' (settings fallback_upstreams: {known})"
                )


class _ParserErrorsWithoutContent(logging.Filter):
    """aiohttp logs rejected requests with the raw bytes it choked on (headers included:
    an Authorization token, a query string): for parser errors keep the exception type
    and drop the rest. Any other exception (a handler crash) keeps its traceback, minus
    the exception's message, which may quote request content."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is None:
            return True
        if isinstance(exc, HttpProcessingError):
            record.msg = "request rejected by the HTTP layer: %s"
            record.args = (type(exc).__name__,)
            record.exc_text = None
        else:
            from sidecar.http_server import crash_traceback

            record.exc_text = crash_traceback(exc)
        record.exc_info = None
        return True


_PARSER_FILTER = _ParserErrorsWithoutContent()


def create_app(
    settings: Settings,
    *,
    exporters: Sequence[Exporter] | None = None,
) -> web.Application:
    """Build the sidecar app. ``exporters`` replaces the configured ones (tests, embedding)."""
    from sidecar.routes import setup_routes

    server_log = logging.getLogger("aiohttp.server")
    if _PARSER_FILTER not in server_log.filters:
        server_log.addFilter(_PARSER_FILTER)
    if settings.upstream.url is None:
        raise ConfigError("invalid setting 'upstream.url': required (or use `railwatch serve` "
                          "without --upstream to start the demo upstream)")
    if exporters is None:
        pairs = build_exporters(settings)
    else:  # given exporters replace `settings.exporters`; metrics and OTLP still apply
        pairs = [(e, ExporterSettings(kind=e.name)) for e in exporters]
        pairs += build_exporters(settings.model_copy(update={"exporters": []}))
    upstreams = UpstreamSet(
        UpstreamClient(settings.upstream, settings.upstream.url),
        {
            name: UpstreamClient(spec, spec.url or "")
            for name, spec in settings.fallback_upstreams.items()
        },
        settings.circuit,
        public_url,
    )
    for name, spec in settings.fallback_upstreams.items():
        if spec.url is None:
            raise ConfigError(f"invalid setting 'fallback_upstreams.{name}.url': required")
    guard = None
    in_flight = InFlight()  # the proxy counts requests, the guard reads the count
    if settings.guardrails.enabled:
        policy = load_policy(settings.guardrails.policy)
        _check_fallbacks(policy, settings)
        guard = build_guard(policy, in_flight)
    clickhouse = clickhouse_exporter([e for e, _ in pairs])
    metrics = _prometheus_exporter([e for e, _ in pairs])
    exports = ExportPipeline()
    from sidecar.drift.assembly import build_drift  # drift (issue 12): worker + scheduler

    drift = build_drift(settings, clickhouse)
    if drift is not None:
        pairs.append((drift.exporter, ExporterSettings(kind="drift")))
    exporter_list = [e for e, _ in pairs]
    # every record consumer, drift's included (it reads the stored, masked prompt)
    intake, privacy, emitter = build_records(settings, guard, exports, exporter_list)
    signals = ImplicitSignals(issued=IssuedTraces(
        settings.feedback.issued_window_s, settings.feedback.max_issued))
    review_store = feedback_store(clickhouse)
    handoff, review_auth = (_build_handoff(settings, review_store, privacy)
                            if settings.handoff.enabled else (None, None))
    proxy = Proxy(settings.server, upstreams, emitter, guard, RateLimiter(settings.rate_limits),
                  signals=signals, handoff=handoff, in_flight=in_flight)
    runtime = Runtime(
        settings=settings, upstreams=upstreams, exports=exports, intake=intake,
        privacy=privacy, emitter=emitter, proxy=proxy, signals=signals,
        feedback_store=review_store, guard=guard, metrics=metrics, clickhouse=clickhouse,
        handoff=handoff, review_auth=review_auth, drift=drift,
    )
    if metrics is not None:
        _register_state_sources(metrics, runtime)
        if drift is not None:
            metrics.add_state_source("drift", drift.state.samples)

    # aiohttp's own body limit is ours plus slack; ingress enforces the exact limit (413).
    app = web.Application(client_max_size=settings.server.max_body_bytes + 1024)
    app[RUNTIME] = runtime
    app[BODY_TIMEOUT] = settings.server.body_timeout_s
    setup_routes(app, runtime)

    async def stop() -> None:
        """Stop whatever started, in reverse order; safe after a partial start."""
        if handoff is not None and runtime.components.get("handoff") == "ok":
            await handoff.close()
            runtime.components["handoff"] = "stopped"
        if drift is not None and drift.service is not None and runtime.components.get("drift"):
            await drift.service.close()
            runtime.components["drift"] = "stopped"
        await upstreams.close()
        runtime.components["upstream_client"] = "stopped"
        # the intake drains (it may still mask with the detectors) before they close
        if runtime.components.get("intake") == "ok":
            await asyncio.to_thread(intake.shutdown, settings.server.shutdown_timeout_s)
            runtime.components["intake"] = "stopped"
        else:
            await asyncio.to_thread(exports.shutdown, settings.server.shutdown_timeout_s)
        if guard is not None:
            await guard.runner.close()
            runtime.components["detectors"] = "stopped"
        for name in list(runtime.components):
            if name.startswith("exporter:"):
                runtime.components[name] = "stopped"

    async def lifespan(_app: web.Application) -> AsyncIterator[None]:
        try:
            runtime.components["upstream_client"] = "starting"
            await upstreams.start()
            runtime.components["upstream_client"] = "ok"
            if guard is not None:
                runtime.components["detectors"] = "starting"
                try:
                    await guard.runner.start()
                except DetectorError as exc:
                    runtime.components["detectors"] = "failed"
                    raise StartupError(str(exc)) from exc
                runtime.components["detectors"] = "ok"
                _limit_torch_threads(settings.guardrails.torch_threads)
            await start_exporters(pairs, exports, runtime.components)
            if drift is not None and drift.service is not None:
                await drift.service.start()
                runtime.components["drift"] = "ok"
            runtime.components["intake"] = "starting"
            try:  # replays what a crashed process left in the journal
                await asyncio.to_thread(intake.start)
            except SpillError as exc:
                runtime.components["intake"] = "failed"
                raise StartupError(f"record journal failed to start: {exc}") from exc
            runtime.components["intake"] = "ok"
            if handoff is not None:
                await handoff.start()
                runtime.components["handoff"] = "ok"
        except BaseException:
            await stop()
            raise
        learning = _learn_model_labels(runtime)
        try:
            yield
        finally:
            if learning is not None:
                learning.cancel()
            await stop()

    app.cleanup_ctx.append(lifespan)
    return app


def clickhouse_exporter(exporters: Sequence[Exporter]) -> ClickHouseExporter | None:
    """The ClickHouse trace exporter, whose store the other ClickHouse users share."""
    if not any(e.name == "clickhouse" for e in exporters):
        return None  # nothing to share: ClickHouse (and its driver) stays unimported
    from exporters.clickhouse.exporter import ClickHouseExporter

    return next((e for e in exporters if isinstance(e, ClickHouseExporter)), None)


def _prometheus_exporter(exporters: Sequence[Exporter]) -> PrometheusExporter | None:
    if not any(e.name == "prometheus" for e in exporters):
        return None
    from exporters.prometheus.exporter import PrometheusExporter

    return next((e for e in exporters if isinstance(e, PrometheusExporter)), None)


def _journal(settings: Settings, exporters: Sequence[Exporter]) -> IntakeJournal | None:
    """The crash journal, when enabled and some exporter keeps records durably."""
    if not settings.journal.enabled or not any(isinstance(e, DurableExporter) for e in exporters):
        return None
    cfg = settings.journal
    return IntakeJournal(settings.data_path("journal"), max_bytes=cfg.max_bytes,
                         fsync_every_s=cfg.fsync_every_s)


def feedback_store(clickhouse: ClickHouseExporter | None) -> ReviewStore:
    """Hand-offs and feedback: in ClickHouse through the exporter's store (one chDB
    engine per process), else in memory (lost on restart)."""
    if clickhouse is None:
        from sidecar.handoff.store import MemoryHandoffStore

        return MemoryHandoffStore()
    from sidecar.handoff.clickhouse import ClickHouseHandoffStore

    return ClickHouseHandoffStore(clickhouse.store.run, store_text=clickhouse.store.store_text)


def _build_handoff(
    settings: Settings, store: ReviewStore, privacy: StoragePrivacy
) -> tuple[HandoffService, ReviewAuth]:
    """The hand-off queue (on the feedback storage, its content kept as the privacy
    settings say) and the review UI's auth. Built (not started) before the proxy,
    whose completions flow takes the service; the lifespan starts it last."""
    from sidecar.handoff.auth import ReviewAuth
    from sidecar.handoff.content import ContentPolicy
    from sidecar.handoff.service import HandoffService

    service = HandoffService(
        settings.handoff, store,
        content=ContentPolicy.from_privacy(settings.privacy, privacy.finder, storage=privacy),
    )
    return service, ReviewAuth.from_settings(settings.handoff.review)


def _register_state_sources(prom: PrometheusExporter, runtime: Runtime) -> None:
    """Scrape-time gauges from the components' own typed snapshots and ``state()``."""
    from exporters.prometheus import sources

    prom.add_state_source("exports", sources.export_pipeline_source(runtime.exports.snapshots))
    if runtime.clickhouse is not None:
        prom.add_state_source("clickhouse", sources.clickhouse_source(runtime.clickhouse.snapshot))
    prom.add_state_source("intake", sources.intake_source(runtime.intake))
    prom.add_state_source("proxy", sources.proxy_source(runtime.proxy.state))
    if runtime.proxy.limiter is not None:
        prom.add_state_source("rate_limits", sources.rate_limit_source(runtime.proxy.limiter.state))
    prom.add_state_source("upstreams", sources.upstreams_source(runtime.upstreams.state))
    prom.add_state_source(
        "upstream_probe",
        sources.upstream_probe_source(lambda: runtime.upstreams.primary.client.last_probe()),
    )
    if runtime.guard is not None:
        prom.add_state_source("detectors", sources.detector_runner_source(runtime.guard.runner.state))


def _learn_model_labels(runtime: Runtime) -> asyncio.Task[None] | None:
    """Reserve metric labels for the upstream's listed models (background; never raises)."""
    if runtime.metrics is None:
        return None
    from sidecar.model_labels import learn_models

    client = runtime.upstreams.primary.client
    return asyncio.create_task(
        learn_models(lambda: client.session, client.base_url, runtime.metrics.known_models))


def _limit_torch_threads(threads: int) -> None:
    """Apply ``guardrails.torch_threads`` when a detector loaded torch (never imports it)."""
    torch = sys.modules.get("torch")
    if torch is not None and threads > 0:
        torch.set_num_threads(threads)

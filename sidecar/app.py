"""Application factory and lifespan.

``create_app`` wires the components (upstream client, exporters, pipeline) into
an aiohttp application; they start in the app's start-up, in dependency order,
and stop in reverse at clean-up (in-flight requests finish first, then the
exporters flush). Nothing heavy happens at import time or in constructors.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from detectors import registry as detector_registry
from detectors.errors import DetectorError
from detectors.runner import DetectorRunner
from exporters import registry as exporter_registry
from exporters.base import Exporter
from exporters.batch import BatchProcessor, ExportPipeline
from sidecar.errors import ConfigError, StartupError
from sidecar.pipeline.actions import UpstreamSet
from sidecar.pipeline.emit import Emitter, TextMasker
from sidecar.pipeline.guard import Guard
from sidecar.pipeline.ingress import BODY_TIMEOUT
from sidecar.pipeline.proxy import Proxy
from sidecar.pipeline.upstream import UpstreamClient, public_url
from sidecar.policy import Policy, load_policy
from sidecar.ratelimit import RateLimiter
from sidecar.settings import ExporterSettings, Settings

logger = logging.getLogger(__name__)


@dataclass
class Runtime:
    """The started components of one sidecar; held by the app under ``RUNTIME``."""

    settings: Settings
    upstreams: UpstreamSet
    exports: ExportPipeline
    emitter: Emitter
    proxy: Proxy
    guard: Guard | None = None
    metrics: Any = None  # the PrometheusExporter serving /metrics, when enabled
    handoff: Any = None  # HandoffService, when handoff.enabled
    review_auth: Any = None  # ReviewAuth of the /review UI, when handoff.enabled
    feedback_store: Any = None  # where POST /v1/feedback writes
    signals: Any = None  # ImplicitSignals
    drift: Any = None  # sidecar.drift.assembly.DriftParts, when drift tracking runs
    components: dict[str, str] = field(default_factory=dict)  # name -> "starting" | "ok" | ...


RUNTIME: web.AppKey[Runtime] = web.AppKey("railwatch_runtime", Runtime)


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
        start = getattr(exporter, "start", None)
        if callable(start):
            try:
                result = await asyncio.to_thread(start)
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


def build_guard(policy: Policy) -> Guard:
    """Create (not start) every detector the policy names, in a runner."""
    runner = DetectorRunner()
    detectors = {}
    for name, spec in policy.detectors.items():
        try:
            detector = detector_registry.create(spec.kind, spec.options, name=name)
        except DetectorError as exc:
            raise ConfigError(f"invalid policy detector '{name}': {exc}") from None
        runner.add(detector, spec.run)
        detectors[name] = detector
    return Guard(policy, runner, detectors)


PRIVACY_KINDS = ("pii", "secrets")  # what `privacy.capture: masked` hides in stored text


def privacy_finder(guard: Guard | None) -> Callable[[str], list[Any]] | None:
    """Every PII and secret finding in a text, from the policy's own detectors (sync).

    ``privacy.capture: masked`` stores text only through this; without a PII detector
    in the policy, masked mode stores no text at all.
    """
    if guard is None:
        return None
    chosen: list[Any] = [
        guard.detectors[name]
        for name, spec in guard.policy.detectors.items()
        if spec.kind in PRIVACY_KINDS and hasattr(guard.detectors[name], "detect_sync")
    ]
    if not any(spec.kind == "pii" for spec in guard.policy.detectors.values()):
        return None

    def find(text: str) -> list[Any]:
        found: list[Any] = []
        for detector in chosen:
            found.extend(detector.detect_sync([text])[0])
        return found

    return find


def privacy_masker(guard: Guard | None) -> TextMasker | None:
    """For ``privacy.capture: masked``: the text with every PII and secret finding masked."""
    find = privacy_finder(guard)
    if find is None:
        return None
    from sidecar.masking import Masker

    def mask(text: str) -> str:
        return Masker().mask(text, find(text))

    return mask


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
    if settings.guardrails.enabled:
        policy = load_policy(settings.guardrails.policy)
        _check_fallbacks(policy, settings)
        guard = build_guard(policy)
    exports = ExportPipeline()
    emitter = Emitter(exports, settings.privacy, privacy_masker(guard))
    proxy = Proxy(settings.server, upstreams, emitter, guard, RateLimiter(settings.rate_limits))
    runtime = Runtime(settings, upstreams, exports, emitter, proxy, guard)
    from sidecar.drift.assembly import build_drift  # drift (issue 12): worker + scheduler

    runtime.drift = drift = build_drift(settings, [e for e, _ in pairs])
    if drift is not None:
        pairs.append((drift.exporter, ExporterSettings(kind="drift")))
    for exporter, _spec in pairs:
        if exporter.name == "prometheus":
            runtime.metrics = exporter
            _register_state_sources(exporter, runtime)
            if drift is not None:
                exporter.add_state_source("drift", drift.state.samples)  # type: ignore[attr-defined]
    _build_review_services(runtime, [e for e, _ in pairs])

    # aiohttp's own body limit is ours plus slack; ingress enforces the exact limit (413).
    app = web.Application(client_max_size=settings.server.max_body_bytes + 1024)
    app[RUNTIME] = runtime
    app[BODY_TIMEOUT] = settings.server.body_timeout_s
    setup_routes(app, runtime)

    async def stop() -> None:
        """Stop whatever started, in reverse order; safe after a partial start."""
        if runtime.handoff is not None and runtime.components.get("handoff") == "ok":
            await runtime.handoff.close()
            runtime.components["handoff"] = "stopped"
        if drift is not None and drift.service is not None and runtime.components.get("drift"):
            await drift.service.close()
            runtime.components["drift"] = "stopped"
        await upstreams.close()
        runtime.components["upstream_client"] = "stopped"
        if guard is not None:
            await guard.runner.close()
            runtime.components["detectors"] = "stopped"
        await asyncio.to_thread(exports.shutdown, settings.server.shutdown_timeout_s)
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
            if runtime.handoff is not None:
                await runtime.handoff.start()
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


def _build_review_services(runtime: Runtime, exporters: Sequence[Exporter]) -> None:
    """Hand-off queue, review UI auth, feedback store and implicit signals.

    Storage is the ClickHouse exporter's (one chDB engine per process: it owns the
    client); without a ClickHouse exporter both live in memory, lost on restart.
    """
    from sidecar.feedback import ImplicitSignals
    from sidecar.feedback_gate import IssuedTraces
    from sidecar.handoff.auth import ReviewAuth
    from sidecar.handoff.clickhouse import ClickHouseHandoffStore
    from sidecar.handoff.content import ContentPolicy
    from sidecar.handoff.hook import make_handoff_hook
    from sidecar.handoff.service import HandoffService
    from sidecar.handoff.store import MemoryHandoffStore

    settings = runtime.settings
    clickhouse = next((e for e in exporters if e.name == "clickhouse"), None)
    store: Any
    if clickhouse is not None:
        store = ClickHouseHandoffStore(
            clickhouse.run_query,  # type: ignore[attr-defined]
            store_text=clickhouse.config.store_text,  # type: ignore[attr-defined]
        )
    else:
        store = MemoryHandoffStore()
    runtime.feedback_store = store
    runtime.signals = ImplicitSignals(issued=IssuedTraces(
        settings.feedback.issued_window_s, settings.feedback.max_issued))
    runtime.proxy.signals = runtime.signals
    if not settings.handoff.enabled:
        return
    pii = privacy_finder(runtime.guard)
    service = HandoffService(
        settings.handoff, store, content=ContentPolicy.from_privacy(settings.privacy, pii)
    )
    runtime.handoff = service
    runtime.review_auth = ReviewAuth.from_settings(settings.handoff.review)
    runtime.proxy.completions.handoff = make_handoff_hook(service)
    runtime.proxy.completions.handoff_service = service


def _register_state_sources(prom: Any, runtime: Runtime) -> None:
    """Scrape-time gauges from the components' own ``state()``."""
    from exporters.prometheus import sources

    prom.add_state_source("exports", sources.export_pipeline_source(runtime.exports.state))
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


def readiness(runtime: Runtime, upstream_state: dict[str, Any]) -> tuple[bool, dict[str, Any]]:
    """(ready, JSON body) for ``/readyz``."""
    exporters = runtime.exports.state()
    components: dict[str, Any] = {
        "upstream": upstream_state,
        "upstreams": runtime.upstreams.state(),
        "pipeline": {"state": "ok", **runtime.proxy.state()},
        "exporters": exporters,
    }
    if runtime.guard is not None:
        components["detectors"] = runtime.guard.runner.state()
    started = all(state == "ok" for state in runtime.components.values())
    ready = started and upstream_state.get("state") == "ok"
    for name, state in runtime.components.items():
        components.setdefault("lifecycle", {})[name] = state
    # open circuit breakers: still ready (other endpoints and fallbacks serve), but degraded
    degraded = runtime.upstreams.degraded()
    status = "not_ready" if not ready else "degraded" if degraded else "ready"
    body: dict[str, Any] = {"status": status, "components": components}
    if degraded:
        body["degraded"] = [f"circuit open: {where}" for where in degraded]
    return ready, body

"""Application factory and lifespan.

``create_app`` wires the components (upstream client, exporters, pipeline) into
an aiohttp application; they start in the app's start-up, in dependency order,
and stop in reverse at clean-up (in-flight requests finish first, then the
exporters flush). Nothing heavy happens at import time or in constructors.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from exporters import registry as exporter_registry
from exporters.base import Exporter
from exporters.batch import BatchProcessor, ExportPipeline
from sidecar.errors import ConfigError, StartupError
from sidecar.pipeline.emit import Emitter
from sidecar.pipeline.proxy import Proxy
from sidecar.pipeline.upstream import UpstreamClient
from sidecar.settings import ExporterSettings, Settings

logger = logging.getLogger(__name__)


@dataclass
class Runtime:
    """The started components of one sidecar; held by the app under ``RUNTIME``."""

    settings: Settings
    upstream: UpstreamClient
    exports: ExportPipeline
    emitter: Emitter
    proxy: Proxy
    components: dict[str, str] = field(default_factory=dict)  # name -> "starting" | "ok" | ...


RUNTIME: web.AppKey[Runtime] = web.AppKey("railwatch_runtime", Runtime)


def build_exporters(settings: Settings) -> list[tuple[Exporter, ExporterSettings]]:
    """Instantiate the configured exporters (cheap; they connect in ``start``)."""
    from exporters.errors import ExporterConfigError

    built = []
    for i, spec in enumerate(settings.exporters):
        try:
            exporter = exporter_registry.create(
                spec.kind, spec.options, data_dir=settings.data_path()
            )
        except ExporterConfigError as exc:
            raise ConfigError(f"invalid setting 'exporters.{i}': {exc}") from None
        built.append((exporter, spec))
    return built


def create_app(
    settings: Settings,
    *,
    exporters: Sequence[Exporter] | None = None,
) -> web.Application:
    """Build the sidecar app. ``exporters`` replaces the configured ones (tests, embedding)."""
    from sidecar.routes import setup_routes

    if settings.upstream.url is None:
        raise ConfigError("invalid setting 'upstream.url': required (or use `railwatch serve` "
                          "without --upstream to start the demo upstream)")
    if exporters is None:
        pairs = build_exporters(settings)
    else:
        pairs = [(e, ExporterSettings(kind=e.name)) for e in exporters]
    upstream = UpstreamClient(settings.upstream, settings.upstream.url)
    exports = ExportPipeline()
    emitter = Emitter(exports, settings.privacy)
    proxy = Proxy(settings.server, upstream, emitter)
    runtime = Runtime(settings, upstream, exports, emitter, proxy)

    # aiohttp's own body limit is ours plus slack; ingress enforces the exact limit (413).
    app = web.Application(client_max_size=settings.server.max_body_bytes + 1024)
    app[RUNTIME] = runtime
    setup_routes(app, runtime)

    async def lifespan(_app: web.Application) -> AsyncIterator[None]:
        runtime.components["upstream_client"] = "starting"
        await upstream.start()
        runtime.components["upstream_client"] = "ok"
        for exporter, spec in pairs:
            key = f"exporter:{exporter.name}"
            runtime.components[key] = "starting"
            start = getattr(exporter, "start", None)
            if callable(start):
                try:
                    result = await asyncio.to_thread(start)
                    if asyncio.iscoroutine(result):
                        await result
                except Exception as exc:
                    runtime.components[key] = "failed"
                    await upstream.close()
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
            runtime.components[key] = "ok"
        try:
            yield
        finally:
            await upstream.close()
            runtime.components["upstream_client"] = "stopped"
            await asyncio.to_thread(exports.shutdown, settings.server.shutdown_timeout_s)
            for name in list(runtime.components):
                if name.startswith("exporter:"):
                    runtime.components[name] = "stopped"

    app.cleanup_ctx.append(lifespan)
    return app


def readiness(runtime: Runtime, upstream_state: dict[str, Any]) -> tuple[bool, dict[str, Any]]:
    """(ready, JSON body) for ``/readyz``."""
    exporters = runtime.exports.state()
    components: dict[str, Any] = {
        "upstream": upstream_state,
        "pipeline": {"state": "ok", **runtime.proxy.state()},
        "exporters": exporters,
    }
    started = all(state == "ok" for state in runtime.components.values())
    ready = started and upstream_state.get("state") == "ok"
    for name, state in runtime.components.items():
        components.setdefault("lifecycle", {})[name] = state
    return ready, {"status": "ready" if ready else "not_ready", "components": components}

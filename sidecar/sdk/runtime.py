"""The SDK's process-wide runtime: detectors, policy and exporters, started once.

Two modes, chosen by :func:`configure` (or ``RAILWATCH_SDK_MODE``/``..._SIDECAR_URL``):

- ``local``: the same settings and policy files as the sidecar (``config``,
  ``policy``; ``RAILWATCH_*`` variables apply), detectors and exporters in this
  process. Traces go to the configured exporters (ClickHouse by default), marked
  ``railwatch.source=sdk``.
- ``remote``: detection through a running sidecar's ``POST /v1/guardrails/check`` and
  traces posted to its ``POST /v1/sdk/traces`` (with the sidecar's
  ``sdk.ingest_token``), so an app without a GPU uses the sidecar's detectors.

Nothing is imported or loaded until first use (or :func:`start`): importing the SDK
does not import torch. The runtime lives on the SDK's own loop thread
(:mod:`sidecar.sdk._loop`); :func:`shutdown` (also run at exit) flushes exporters.
Thread-safe: start and shutdown take a lock.
"""

from __future__ import annotations

import asyncio

import atexit
import logging
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from sidecar.errors import ConfigError
from sidecar.sdk._loop import LoopThread

if TYPE_CHECKING:
    from sidecar.privacy import StoragePrivacy
    from sidecar.pipeline.emit import Emitter
    from sidecar.pipeline.guard import Guard
    from sidecar.policy import Route
    from sidecar.settings import Settings

logger = logging.getLogger(__name__)

Mode = Literal["local", "remote"]
SOURCE = "sdk"


@dataclass(frozen=True, slots=True)
class SdkConfig:
    mode: Mode = "local"
    config: str | None = None  # a settings file (local)
    policy: str | None = None  # a policy file (local); None: the settings' or the default
    sidecar_url: str | None = None  # remote: the sidecar's base URL
    token: str | None = None  # remote: the sidecar's sdk.ingest_token
    timeout_s: float = 10.0  # remote: each HTTP call
    settings_overrides: dict[str, Any] = field(default_factory=dict)  # local, as dotted trees

    @classmethod
    def from_environment(cls) -> SdkConfig:
        url = os.environ.get("RAILWATCH_SDK_SIDECAR_URL") or None
        mode = os.environ.get("RAILWATCH_SDK_MODE") or ("remote" if url else "local")
        if mode not in ("local", "remote"):
            raise ConfigError(f"invalid RAILWATCH_SDK_MODE {mode!r}: local or remote")
        return cls(
            mode=mode,  # type: ignore[arg-type]
            config=os.environ.get("RAILWATCH_SDK_CONFIG") or None,
            policy=os.environ.get("RAILWATCH_SDK_POLICY") or None,
            sidecar_url=url,
            token=os.environ.get("RAILWATCH_SDK_TOKEN") or None,
        )


class SdkRuntime:
    """Started components. ``guard`` checks (local or remote), ``emit`` records traces."""

    def __init__(self, config: SdkConfig) -> None:
        if config.mode == "remote" and not config.sidecar_url:
            raise ConfigError("the SDK's remote mode needs sidecar_url")
        self.config = config
        self.loop = LoopThread()
        self.guard: Guard | None = None
        self.emitter: Emitter | None = None
        self.settings: Settings | None = None
        self._exports: Any = None
        self._closers: list[Any] = []
        self.feedback_store: Any = None  # FeedbackStore (local mode)
        self.store_feedback_text = False
        self.privacy: StoragePrivacy | None = None  # local mode: what storage keeps

    # --- start and stop ---------------------------------------------------------------

    def start(self) -> None:
        """Build and start everything (blocking; on the SDK loop). Raises ConfigError or
        StartupError and leaves nothing running when it does."""
        try:
            self.loop.run(self._start())
        except BaseException:
            self.close()
            raise

    async def _start(self) -> None:
        from exporters.batch import ExportPipeline
        from sidecar.app import (
            build_exporters,
            build_guard,
            build_records,
            clickhouse_exporter,
            feedback_store,
            start_exporters,
        )
        from sidecar.policy import load_policy
        from sidecar.settings import load_settings

        config = self.config
        overrides = {"metrics": {"enabled": False}, **config.settings_overrides}
        settings = load_settings(config.config, overrides=overrides)
        self.settings = settings
        exports = ExportPipeline()
        if config.mode == "local":
            policy = load_policy(config.policy or settings.guardrails.policy)
            guard = build_guard(policy)
            await guard.runner.start()
            self._closers.append(guard.runner.close)
            self.guard = guard
            pairs = build_exporters(settings)
            exporters = [e for e, _ in pairs]
            intake, self.privacy, self.emitter = build_records(settings, guard, exports,
                                                               exporters)
            self._exports = intake
            await start_exporters(pairs, exports, {})
            await asyncio.to_thread(intake.start)
            clickhouse = clickhouse_exporter(exporters)
            self.feedback_store = feedback_store(clickhouse)
            self.store_feedback_text = clickhouse is not None and clickhouse.store.store_text
        else:
            from sidecar.sdk.remote import RemoteGuard, SidecarTraceExporter

            assert config.sidecar_url is not None
            remote = RemoteGuard(config.sidecar_url, config.token, config.timeout_s)
            self._closers.append(remote.close)  # also after a failed start: its session
            await remote.start()
            self.guard = remote
            exporter = SidecarTraceExporter(config.sidecar_url, config.token, config.timeout_s)
            from sidecar.settings import ExporterSettings

            await start_exporters([(exporter, ExporterSettings(kind=exporter.name))], exports, {})
            # the sidecar applies its own privacy setting to what it receives; raw here
            raw = settings.model_copy(update={
                "privacy": settings.privacy.model_copy(update={"capture": "raw"})})
            intake, _, self.emitter = build_records(raw, None, exports, [exporter])
            self._exports = intake
            await asyncio.to_thread(intake.start)

    def close(self, timeout_s: float = 10.0) -> None:
        """Flush and stop; idempotent. Records are flushed first: finishing one for
        storage (masking its text) needs the detectors, which close after."""
        closers, self._closers = self._closers, []
        exports, self._exports = self._exports, None

        async def close_all() -> None:
            for close in reversed(closers):
                await close()

        try:
            if exports is not None:
                exports.shutdown(timeout_s)
        finally:
            try:
                if closers and not self.loop.loop.is_closed():
                    self.loop.run(close_all(), timeout_s)
            finally:
                self.loop.stop()

    # --- what guarded calls use -------------------------------------------------------

    def route(self, name: str | None, path: str, model: str | None) -> Route:
        """The policy route for a call: by name, else by path and model, else a route that
        checks nothing (traced only)."""
        from sidecar.policy import Route

        assert self.guard is not None
        if name is not None:
            route = self.guard.route_named(name)
            if route is None:
                raise ConfigError(f"no policy route named {name!r}")
            return route
        return self.guard.route_for(path, model, None) or Route(name="sdk-untraced-checks")


_lock = threading.Lock()
_runtime: SdkRuntime | None = None
_config: SdkConfig | None = None


def configure(
    *,
    mode: Mode | None = None,
    config: str | os.PathLike[str] | None = None,
    policy: str | os.PathLike[str] | None = None,
    sidecar_url: str | None = None,
    token: str | None = None,
    settings: dict[str, Any] | None = None,
) -> None:
    """Set how the SDK runs; call before the first guarded call (or after :func:`shutdown`).
    Raises ConfigError when the runtime is already started with another configuration."""
    global _config
    chosen = SdkConfig(
        mode=mode or ("remote" if sidecar_url else "local"),
        config=str(Path(config)) if config is not None else None,
        policy=str(Path(policy)) if policy is not None else None,
        sidecar_url=sidecar_url,
        token=token,
        settings_overrides=dict(settings or {}),
    )
    with _lock:
        if _runtime is not None and _runtime.config != chosen:
            raise ConfigError("the SDK is already started; call shutdown() before configure()")
        _config = chosen


def runtime() -> SdkRuntime:
    """The process's runtime, started on first use."""
    global _runtime
    current = _runtime
    if current is not None:
        return current
    with _lock:
        if _runtime is None:
            started = SdkRuntime(_config or SdkConfig.from_environment())
            started.start()
            _runtime = started
        return _runtime


def start() -> None:
    """Start now (load models, connect exporters) instead of on the first call."""
    runtime()


def shutdown(timeout_s: float = 10.0) -> None:
    """Flush exporters and stop; the next guarded call starts a new runtime."""
    global _runtime
    with _lock:
        current, _runtime = _runtime, None
    if current is not None:
        current.close(timeout_s)


atexit.register(shutdown)

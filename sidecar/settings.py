"""Typed settings: a YAML file, then ``RAILWATCH_*`` environment variables, then flags.

Environment variables address nested keys with a double underscore:
``RAILWATCH_UPSTREAM__URL=http://127.0.0.1:8000`` sets ``upstream.url``,
``RAILWATCH_SERVER__MAX_IN_FLIGHT=64`` sets ``server.max_in_flight``. Values are
parsed as YAML scalars (``true``, ``5``, ``0.5``). Only variables holding ``__``
are read, besides the top-level ``RAILWATCH_DATA_DIR`` and ``RAILWATCH_LOG_LEVEL``, so
``RAILWATCH_MODELS_DIR`` and other plain variables do not collide.

Everything is validated once at start-up; :func:`load_settings` raises
:class:`~sidecar.errors.ConfigError` naming the key and where its value came from.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from sidecar.drift.config import DriftSettings
from sidecar.errors import ConfigError
from sidecar.feedback_gate import FeedbackSettings
from sidecar.handoff.config import HandoffSettings
from sidecar.pipeline.circuit import CircuitSettings
from sidecar.ratelimit import RateLimitSettings

ENV_PREFIX = "RAILWATCH_"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ServerSettings(_Model):
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    max_body_bytes: int = Field(default=4 * 1024 * 1024, gt=0)
    max_in_flight: int = Field(default=1024, gt=0)
    retry_after_s: int = Field(default=1, ge=0)
    shutdown_timeout_s: float = Field(default=10.0, ge=0)
    # a client must send its request line and headers within header_timeout_s of
    # starting them (0: no limit), and its whole body within body_timeout_s; else 408
    header_timeout_s: float = Field(default=10.0, ge=0)
    body_timeout_s: float = Field(default=30.0, gt=0)
    # the server process's young-generation GC threshold (container allocations between
    # collections; Python's default is 700, 0 keeps it): fewer collections, ~10% less CPU
    gc_young_threshold: int = Field(default=10_000, ge=0, le=1_000_000)


def _check_http_url(value: str | None) -> str | None:
    if value is None:
        return None
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http:// or https:// URL with a host")
    if parts.query or parts.fragment:
        raise ValueError("must not have a query or fragment")
    if parts.username is not None or parts.password is not None:
        # they would show in /readyz and logs, and aiohttp refuses them beside a client's
        # Authorization header: clients send their own credentials, which are forwarded
        raise ValueError("must not hold credentials (user:password@); clients' Authorization "
                         "headers are forwarded")
    return value.rstrip("/")


class UpstreamSettings(_Model):
    """The model server. ``url`` is its base, without ``/v1`` (``http://127.0.0.1:8000``)."""

    url: str | None = None
    connect_timeout_s: float = Field(default=5.0, gt=0)
    read_timeout_s: float = Field(default=120.0, gt=0)  # longest silence between bytes
    total_timeout_s: float = Field(default=600.0, gt=0)  # whole non-streaming exchange
    pool_size: int = Field(default=512, gt=0)
    pool_per_host: int = Field(default=0, ge=0)  # 0: no per-host cap beyond pool_size
    keepalive_s: float = Field(default=30.0, gt=0)
    # largest answer body read whole (non-streaming), before and after gzip/deflate
    # decoding; past it: 502 upstream_response_too_large
    max_response_bytes: int = Field(default=64 * 1024 * 1024, gt=0)
    # largest SSE line or event (its data lines together) in a stream; past it the
    # stream ends with an upstream_response_too_large error event
    max_sse_event_bytes: int = Field(default=4 * 1024 * 1024, gt=0)
    # streams on policy routes: ask for stream_options.include_usage so token usage is
    # always known (the extra chunk is stripped when the client did not ask for it)
    stream_usage: bool = True

    @field_validator("url")
    @classmethod
    def _valid_url(cls, value: str | None) -> str | None:
        return _check_http_url(value)


class PrivacySettings(_Model):
    """What text a trace keeps: ``raw``, ``masked`` (PII replaced) or ``none``."""

    capture: Literal["raw", "masked", "none"] = "masked"
    max_text_chars: int = Field(default=32_768, ge=0)  # per field; longer text is truncated
    # HMAC key of stored user / conversation pseudonyms (masked, none); unset: a random
    # key kept in <data_dir>/privacy.key. Set it to keep pseudonyms across data dirs.
    pseudonym_key: str | None = Field(default=None, repr=False)


class JournalSettings(_Model):
    """The crash journal between answered requests and the exporters (exporters.journal).

    ``flush_interval_ms`` is what a ``kill -9`` may lose (records answered in the last
    interval) and how often the journal thread wakes; lower costs more CPU. Used when
    a durable exporter (ClickHouse, JSON lines) is configured.
    """

    enabled: bool = True
    flush_interval_ms: float = Field(default=20.0, gt=0, le=10_000)
    max_bytes: int = Field(default=256 << 20, gt=4096)
    fsync_every_s: float = Field(default=1.0, ge=0)  # 0: never (a power loss may lose more)


class ExporterSettings(_Model):
    """One exporter: a ``kind`` from the ``railwatch.exporters`` entry points and its options."""

    kind: str
    options: dict[str, Any] = Field(default_factory=dict)
    max_queue: int = Field(default=8192, gt=0)
    max_batch: int = Field(default=512, gt=0)
    schedule_delay_s: float = Field(default=0.2, gt=0)


class GuardrailSettings(_Model):
    """Detectors and policy. ``policy`` is a policy file; None means the shipped default."""

    enabled: bool = True
    policy: str | None = None
    # CPU threads for torch-based detectors (0: torch's default, one per core). One
    # thread keeps model work from stalling the event loop on a shared machine.
    torch_threads: int = Field(default=1, ge=0)


class MetricsSettings(_Model):
    """Prometheus ``GET /metrics`` (always on unless disabled) and its label bounds."""

    enabled: bool = True
    max_models: int = Field(default=50, ge=1)  # distinct model label values, then "other"


class SdkSettings(_Model):
    """What the sidecar offers the SDK's remote mode: trace ingestion (off without a token)."""

    ingest_token: str | None = Field(default=None, min_length=16)  # Bearer token for /v1/sdk/traces
    max_records: int = Field(default=1000, ge=1)  # records per ingestion request


class Settings(_Model):
    server: ServerSettings = ServerSettings()
    upstream: UpstreamSettings = UpstreamSettings()
    fallback_upstreams: dict[str, UpstreamSettings] = Field(default_factory=dict)
    circuit: CircuitSettings = CircuitSettings()
    privacy: PrivacySettings = PrivacySettings()
    journal: JournalSettings = JournalSettings()
    guardrails: GuardrailSettings = GuardrailSettings()
    metrics: MetricsSettings = MetricsSettings()
    handoff: HandoffSettings = HandoffSettings()
    sdk: SdkSettings = SdkSettings()
    rate_limits: RateLimitSettings = RateLimitSettings()
    feedback: FeedbackSettings = FeedbackSettings()
    drift: DriftSettings = DriftSettings()
    data_dir: str = ".railwatch"
    exporters: list[ExporterSettings] = Field(
        default_factory=lambda: [ExporterSettings(kind="clickhouse")]  # embedded chDB in data_dir
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    def data_path(self, *parts: str) -> Path:
        return Path(self.data_dir).joinpath(*parts)


_TOP_LEVEL_SCALARS = frozenset({"data_dir", "log_level"})


def _env_overrides(env: Mapping[str, str]) -> tuple[dict[str, Any], dict[str, str]]:
    """Nested dict from ``RAILWATCH_A__B=value`` and a map of dotted key -> variable name."""
    tree: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for name, raw in env.items():
        if not name.startswith(ENV_PREFIX):
            continue
        if "__" not in name and name[len(ENV_PREFIX) :].lower() not in _TOP_LEVEL_SCALARS:
            continue
        path = [p.lower() for p in name[len(ENV_PREFIX) :].split("__") if p]
        if not path:
            continue
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError:
            value = raw
        node = tree
        for key in path[:-1]:
            child = node.setdefault(key, {})
            if not isinstance(child, dict):
                raise ConfigError(f"environment variable {name} conflicts with another variable")
            node = child
        node[path[-1]] = value
        sources[".".join(path)] = f"environment variable {name}"
    return tree, sources


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """What is wrong and where, without quoting the line (it may hold a secret)."""
    problem = getattr(exc, "problem", None) or type(exc).__name__
    mark = getattr(exc, "problem_mark", None)
    if mark is not None:
        return f"{problem} at line {mark.line + 1}, column {mark.column + 1}"
    return str(problem)


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def load_settings(
    config_path: str | os.PathLike[str] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Read, merge and validate settings. Raises ConfigError; never returns invalid settings."""
    data: dict[str, Any] = {}
    file_label = "defaults"
    if config_path is not None:
        path = Path(config_path)
        file_label = str(path)
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"config file {path} cannot be read: {exc}") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {path} is not valid YAML: {_yaml_problem(exc)}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {path} must hold a mapping at the top level")
        data = loaded
    env_tree, sources = _env_overrides(os.environ if env is None else env)
    data = _merge(data, env_tree)
    if overrides:
        data = _merge(data, overrides)
        for key in _dotted_keys(overrides):
            sources[key] = "command line"
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, sources, file_label)) from None


def _dotted_keys(tree: Mapping[str, Any], prefix: str = "") -> list[str]:
    keys: list[str] = []
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping):
            keys.extend(_dotted_keys(value, dotted + "."))
        else:
            keys.append(dotted)
    return keys


def _describe(exc: ValidationError, sources: Mapping[str, str], file_label: str) -> str:
    lines = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"])
        source = sources.get(key, file_label)
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown setting"
        lines.append(f"invalid setting '{key}' (from {source}): {msg}")
    return "; ".join(lines)

"""The finished-request record that every exporter receives.

A :class:`TraceRecord` is built once, at the end of a request, from the request's
``RequestContext`` and never changes afterwards. It is the only type the
``exporters`` package imports from ``sidecar`` (together with the names in
``sidecar.semconv``), so this module must stay free of heavy imports.

Units: every ``*_ms`` field is milliseconds (float); ``started_at`` / ``ended_at``
are Unix epoch seconds (float). Text fields (``prompt_text``, ``output_text``) hold
what the privacy setting allows: raw text, masked text, or ``None``.
"""

from __future__ import annotations

from collections.abc import Mapping
import dataclasses
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

_EMPTY: Mapping[str, str] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class FindingRecord:
    """One detector finding as it is stored: where, what, how sure, what was done."""

    stage: str  # "input" | "output"
    detector: str
    label: str
    score: float
    start: int  # character offsets into the checked text
    end: int
    action: str  # the policy action applied because of it ("flag", "mask", "block", ...)
    latency_ms: float = 0.0  # the detector call's latency for the batch holding this text


@dataclass(frozen=True, slots=True)
class DetectorRunRecord:
    """One detector's run on one text of the request (for child spans and latency metrics)."""

    stage: str  # "input" | "output"
    detector: str
    offset_ms: float  # when the stage started, after the request arrived
    latency_ms: float  # the caller's wait, queueing included
    findings: int = 0  # findings the detector returned (triggered or not)
    error: str | None = None  # "timeout" | "crashed" | "unavailable"
    batch_size: int = 0


@dataclass(frozen=True, slots=True)
class AttemptRecord:
    """One request sent to an upstream: the first, a retry, or a fallback (child spans)."""

    kind: str  # "primary" | "retry" | "fallback"
    upstream: str  # the upstream's name ("primary" or a fallback's name)
    model: str | None  # the model asked for in this attempt
    offset_ms: float  # when it was sent, after the request arrived
    duration_ms: float
    status: int = 0  # upstream HTTP status (0: no answer)
    error: str | None = None  # "upstream_unavailable" | "upstream_timeout" | "circuit_open" | ...
    decision: str = "pass"  # the output guard's verdict on this attempt's answer


@dataclass(frozen=True, slots=True)
class DecisionRecord:
    """One policy decision taken at a stage of the request."""

    stage: str  # "input" | "output"
    action: str  # "pass" | "flag" | "mask" | "block" | "retry" | "fallback" | "handoff"
    reasons: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class TraceRecord:
    """Everything railwatch knows about one request, frozen at its end."""

    # identity
    request_id: str  # 32 hex chars, unique per request; the row id in storage
    trace_id: str  # 32 hex chars (W3C), continued from an incoming traceparent
    span_id: str  # 16 hex chars, the sidecar's server span
    parent_span_id: str | None
    started_at: float  # epoch seconds
    ended_at: float  # epoch seconds

    # where it went
    method: str
    path: str
    route: str  # operation: "chat" | "text_completion" | "embeddings" | "models" | "passthrough" | ...
    upstream: str  # upstream base URL, never with credentials
    trace_flags: str = "01"  # W3C flags from the caller's traceparent ("01": sampled)
    tenant: str | None = None
    user: str | None = None
    conversation_id: str | None = None

    # model
    model_requested: str | None = None
    model_served: str | None = None
    system_fingerprint: str | None = None
    response_id: str | None = None
    finish_reasons: tuple[str, ...] = ()
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    n: int | None = None

    # outcome
    stream: bool = False
    status: int = 0  # HTTP status sent to the client
    error_type: str | None = None  # stable code such as "upstream_timeout", None when OK
    client_disconnected: bool = False
    upstream_attempts: int = 0  # HTTP attempts made to upstreams (0: never sent)

    # timings, milliseconds
    total_ms: float = 0.0
    upstream_offset_ms: float | None = None  # request arrived -> first upstream send
    upstream_ms: float | None = None  # request sent -> last upstream byte
    overhead_ms: float | None = None  # total - upstream: what the sidecar added
    ttft_ms: float | None = None  # streams: request received -> first content token sent
    tpot_ms: float | None = None  # streams: mean time per output token after the first

    # tokens
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    total_tokens: int | None = None
    usage_source: str | None = None  # "upstream" | "counted" | None

    # content, as the privacy setting allows
    prompt_text: str | None = None
    output_text: str | None = None
    text_masked: bool = False

    # guardrails
    findings: tuple[FindingRecord, ...] = ()
    detector_runs: tuple[DetectorRunRecord, ...] = ()
    decisions: tuple[DecisionRecord, ...] = ()
    decision: str = "pass"  # the final action
    retries: int = 0
    attempts: tuple[AttemptRecord, ...] = ()
    handoff_id: str | None = None

    attributes: Mapping[str, str] = field(default_factory=lambda: _EMPTY)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (tuples become lists, nested records dicts)."""
        out: dict[str, Any] = {}
        for name in self.__slots__:
            value = getattr(self, name)
            if name in ("findings", "detector_runs", "attempts"):
                value = [_slots_dict(f) for f in value]
            elif name == "decisions":
                value = [
                    {"stage": d.stage, "action": d.action, "reasons": list(d.reasons)}
                    for d in value
                ]
            elif name == "attributes":
                value = dict(value)
            elif isinstance(value, tuple):
                value = list(value)
            out[name] = value
        return out


def _slots_dict(obj: Any) -> dict[str, Any]:
    return {name: getattr(obj, name) for name in obj.__slots__}


_TRACE_FIELDS = {f.name for f in dataclasses.fields(TraceRecord)}
_FINDING_FIELDS = {f.name for f in dataclasses.fields(FindingRecord)}
_RUN_FIELDS = {f.name for f in dataclasses.fields(DetectorRunRecord)}
_ATTEMPT_FIELDS = {f.name for f in dataclasses.fields(AttemptRecord)}


def _known(data: Mapping[str, Any], fields: set[str]) -> Mapping[str, Any]:
    return data if data.keys() <= fields else {k: v for k, v in data.items() if k in fields}


def record_from_dict(data: Mapping[str, Any]) -> TraceRecord:
    """Rebuild a record from :meth:`TraceRecord.as_dict` output (the spill format).

    Unknown keys (a newer writer) are ignored and missing optional ones take their
    defaults, so spill entries survive an upgrade in either direction.
    """
    kwargs = dict(data)
    if not kwargs.keys() <= _TRACE_FIELDS:
        kwargs = {k: v for k, v in kwargs.items() if k in _TRACE_FIELDS}
    kwargs["findings"] = tuple(
        FindingRecord(**_known(f, _FINDING_FIELDS)) for f in kwargs.get("findings") or ()
    )
    kwargs["detector_runs"] = tuple(
        DetectorRunRecord(**_known(d, _RUN_FIELDS)) for d in kwargs.get("detector_runs") or ()
    )
    kwargs["attempts"] = tuple(
        AttemptRecord(**_known(a, _ATTEMPT_FIELDS)) for a in kwargs.get("attempts") or ()
    )
    kwargs["decisions"] = tuple(
        DecisionRecord(d["stage"], d["action"], tuple(d.get("reasons") or ()))
        for d in kwargs.get("decisions") or ()
    )
    kwargs["finish_reasons"] = tuple(kwargs.get("finish_reasons") or ())
    kwargs["attributes"] = kwargs.get("attributes") or {}
    return TraceRecord(**kwargs)

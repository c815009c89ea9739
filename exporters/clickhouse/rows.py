"""TraceRecord -> ClickHouse rows, and the column lists the writer inserts.

The column names and types here are the insert contract with the tables of
:mod:`.migrations` (a test compares them with ``system.columns``). Passing the
types with each insert saves clickhouse-connect a ``DESCRIBE`` round trip.

Conversions (all pure, no I/O):

- timestamps: epoch seconds -> ``DateTime64(6)`` microsecond ticks;
- ``model``: the served model, else the requested one, else ``""`` (a key column);
- ``cost_usd``: ``prompt_tokens * input + completion_tokens * output`` per 1M
  tokens from the price of the served (else requested) model; ``NULL`` when the
  model has no price or the request has no token counts;
- integers are clamped into their column's range, so one odd value cannot make
  a whole batch unencodable (also inside the arrays: a run's ``findings`` and
  ``batch_size``, an attempt's ``status`` are ``UInt16``);
- text: ``None`` when ``store_text`` is off, else what the record holds.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from exporters.clickhouse.config import ModelPrice
from exporters.clickhouse.migrations import ATTEMPT_TYPE, DETECTOR_RUN_TYPE
from sidecar.record import TraceRecord
from sidecar.record import record_from_dict as record_from_dict  # the spill format, re-exported

TRACE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("request_id", "String"),
    ("trace_id", "String"),
    ("span_id", "String"),
    ("parent_span_id", "Nullable(String)"),
    ("started_at", "DateTime64(6, 'UTC')"),
    ("ended_at", "DateTime64(6, 'UTC')"),
    ("method", "LowCardinality(String)"),
    ("path", "String"),
    ("route", "LowCardinality(String)"),
    ("upstream", "LowCardinality(String)"),
    ("trace_flags", "LowCardinality(String)"),
    ("tenant", "LowCardinality(Nullable(String))"),
    ("user", "Nullable(String)"),
    ("conversation_id", "Nullable(String)"),
    ("model", "LowCardinality(String)"),
    ("model_requested", "LowCardinality(Nullable(String))"),
    ("model_served", "LowCardinality(Nullable(String))"),
    ("system_fingerprint", "LowCardinality(Nullable(String))"),
    ("response_id", "Nullable(String)"),
    ("finish_reasons", "Array(LowCardinality(String))"),
    ("temperature", "Nullable(Float64)"),
    ("top_p", "Nullable(Float64)"),
    ("max_tokens", "Nullable(Int64)"),
    ("n", "Nullable(Int64)"),
    ("stream", "Bool"),
    ("status", "UInt16"),
    ("error_type", "LowCardinality(Nullable(String))"),
    ("client_disconnected", "Bool"),
    ("upstream_attempts", "UInt16"),
    ("total_ms", "Float64"),
    ("upstream_offset_ms", "Nullable(Float64)"),
    ("upstream_ms", "Nullable(Float64)"),
    ("overhead_ms", "Nullable(Float64)"),
    ("ttft_ms", "Nullable(Float64)"),
    ("tpot_ms", "Nullable(Float64)"),
    ("prompt_tokens", "Nullable(UInt32)"),
    ("completion_tokens", "Nullable(UInt32)"),
    ("total_tokens", "Nullable(UInt32)"),
    ("usage_source", "LowCardinality(Nullable(String))"),
    ("cost_usd", "Nullable(Float64)"),
    ("prompt_text", "Nullable(String)"),
    ("output_text", "Nullable(String)"),
    ("text_masked", "Bool"),
    ("finding_count", "UInt16"),
    ("detectors", "Array(LowCardinality(String))"),
    ("detector_runs", f"Array({DETECTOR_RUN_TYPE})"),
    (
        "decisions",
        (
            "Array(Tuple(stage LowCardinality(String), action LowCardinality(String), "
            "reasons Array(String)))"
        ),
    ),
    ("decision", "LowCardinality(String)"),
    ("retries", "UInt16"),
    ("attempts", f"Array({ATTEMPT_TYPE})"),
    ("handoff_id", "Nullable(String)"),
    ("attributes", "Map(LowCardinality(String), String)"),
    ("version", "UInt64"),
)

FINDING_COLUMNS: tuple[tuple[str, str], ...] = (
    ("request_id", "String"),
    ("trace_id", "String"),
    ("started_at", "DateTime64(6, 'UTC')"),
    ("route", "LowCardinality(String)"),
    ("model", "LowCardinality(String)"),
    ("tenant", "LowCardinality(Nullable(String))"),
    ("idx", "UInt16"),
    ("stage", "LowCardinality(String)"),
    ("detector", "LowCardinality(String)"),
    ("label", "LowCardinality(String)"),
    ("score", "Float64"),
    ("start", "UInt32"),
    ("end", "UInt32"),
    ("action", "LowCardinality(String)"),
    ("latency_ms", "Float64"),
    ("version", "UInt64"),
)

# filled by the server (DEFAULT), not sent: when the row arrived (``tail --follow``)
TRACE_SERVER_COLUMNS: tuple[tuple[str, str], ...] = (("inserted_at", "DateTime64(6, 'UTC')"),)

TRACE_NAMES = tuple(c for c, _ in TRACE_COLUMNS)
TRACE_TYPES = tuple(t for _, t in TRACE_COLUMNS)
FINDING_NAMES = tuple(c for c, _ in FINDING_COLUMNS)
FINDING_TYPES = tuple(t for _, t in FINDING_COLUMNS)

_U16 = 0xFFFF
_U32 = 0xFFFFFFFF
_I64 = (1 << 63) - 1


def _us(seconds: float) -> int:
    return max(0, round(seconds * 1_000_000))


def _clamp(value: int, hi: int, lo: int = 0) -> int:
    return lo if value < lo else min(value, hi)


def _opt_clamp(value: int | None, hi: int, lo: int = 0) -> int | None:
    return None if value is None else _clamp(int(value), hi, lo)


def model_of(record: TraceRecord) -> str:
    return record.model_served or record.model_requested or ""


def cost_usd(record: TraceRecord, prices: Mapping[str, ModelPrice]) -> float | None:
    """USD estimate from the price table, ``None`` when no price or no token counts."""
    if not prices:
        return None
    price = None
    if record.model_served:
        price = prices.get(record.model_served)
    if price is None and record.model_requested:
        price = prices.get(record.model_requested)
    if price is None or (record.prompt_tokens is None and record.completion_tokens is None):
        return None
    return (
        (record.prompt_tokens or 0) * price.input + (record.completion_tokens or 0) * price.output
    ) / 1_000_000


def trace_row(
    r: TraceRecord, *, version: int, store_text: bool, prices: Mapping[str, ModelPrice]
) -> list[Any]:
    """One ``traces`` row, in :data:`TRACE_NAMES` order."""
    return [
        r.request_id,
        r.trace_id,
        r.span_id,
        r.parent_span_id,
        _us(r.started_at),
        _us(r.ended_at),
        r.method,
        r.path,
        r.route,
        r.upstream,
        r.trace_flags,
        r.tenant,
        r.user,
        r.conversation_id,
        model_of(r),
        r.model_requested,
        r.model_served,
        r.system_fingerprint,
        r.response_id,
        list(r.finish_reasons),
        r.temperature,
        r.top_p,
        _opt_clamp(r.max_tokens, _I64, -_I64),
        _opt_clamp(r.n, _I64, -_I64),
        bool(r.stream),
        _clamp(int(r.status), _U16),
        r.error_type,
        bool(r.client_disconnected),
        _clamp(int(r.upstream_attempts), _U16),
        float(r.total_ms),
        r.upstream_offset_ms,
        r.upstream_ms,
        r.overhead_ms,
        r.ttft_ms,
        r.tpot_ms,
        _opt_clamp(r.prompt_tokens, _U32),
        _opt_clamp(r.completion_tokens, _U32),
        _opt_clamp(r.total_tokens, _U32),
        r.usage_source,
        cost_usd(r, prices),
        r.prompt_text if store_text else None,
        r.output_text if store_text else None,
        bool(r.text_masked) if store_text else False,
        _clamp(len(r.findings), _U16),
        sorted({f.detector for f in r.findings}),
        [
            (d.stage, d.detector, float(d.offset_ms), float(d.latency_ms),
             _clamp(int(d.findings), _U16), d.error, _clamp(int(d.batch_size), _U16))
            for d in r.detector_runs
        ],
        [(d.stage, d.action, list(d.reasons)) for d in r.decisions],
        r.decision,
        _clamp(int(r.retries), _U16),
        [
            (a.kind, a.upstream, a.model, float(a.offset_ms), float(a.duration_ms),
             _clamp(int(a.status), _U16), a.error, a.decision)
            for a in r.attempts
        ],
        r.handoff_id,
        {str(k): str(v) for k, v in r.attributes.items()},
        version,
    ]


def finding_rows(r: TraceRecord, *, version: int) -> list[list[Any]]:
    """The ``findings`` rows of one record (``idx`` is the finding's position)."""
    if not r.findings:
        return []
    started = _us(r.started_at)
    model = model_of(r)
    return [
        [
            r.request_id,
            r.trace_id,
            started,
            r.route,
            model,
            r.tenant,
            _clamp(i, _U16),
            f.stage,
            f.detector,
            f.label,
            float(f.score),
            _clamp(int(f.start), _U32),
            _clamp(int(f.end), _U32),
            f.action,
            float(f.latency_ms),
            version,
        ]
        for i, f in enumerate(r.findings)
    ]


def build_rows(
    records: Sequence[TraceRecord],
    *,
    version: int,
    store_text: bool,
    prices: Mapping[str, ModelPrice],
) -> tuple[list[list[Any]], list[list[Any]]]:
    """(traces rows, findings rows) for a batch."""
    traces = [trace_row(r, version=version, store_text=store_text, prices=prices) for r in records]
    findings: list[list[Any]] = []
    for r in records:
        if r.findings:
            findings.extend(finding_rows(r, version=version))
    return traces, findings



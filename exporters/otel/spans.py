"""One trace record -> one OpenTelemetry span tree, following the GenAI conventions.

Span tree of one request (every timestamp from the record, never "now")::

    SERVER  "chat gpt-4o"                 id = record.span_id, parent = record.parent_span_id,
    │                                     trace = record.trace_id
    │  events: gen_ai.evaluation.result (one per finding), railwatch.policy.decision
    ├── CLIENT   "POST /v1/chat/completions"   the upstream call (one per attempt, see below)
    ├── INTERNAL "detect pii"                  one per detector run (input and output)
    └── INTERNAL "detect toxicity"

Names: GenAI routes (``chat``, ``text_completion``, ``embeddings``) follow the GenAI
conventions, ``{gen_ai.operation.name} {gen_ai.request.model}`` (the operation alone
when the request named no model). ``models`` and pass-through requests are not GenAI
operations and follow the HTTP server conventions: ``GET /v1/models`` for the fixed
route, the bare method (``POST``) for pass-through, whose paths are unbounded
(``url.path`` carries the path). The CLIENT span is named the same HTTP way.

Ids: the sidecar already sent ``traceparent`` with ``record.span_id`` upstream, so the
SERVER span carries exactly that id (through :class:`~exporters.otel._sdk.PresetIdGenerator`);
children get random ids, so the upstream server's own spans hang under the SERVER
span, beside our CLIENT span. The record does not carry the caller's trace flags yet:
a caller's parent counts as sampled, and ``record.trace_flags`` is honoured once the
record has it.

Upstream attempts: each ``AttemptRecord`` (the primary call, retries, fallbacks, in
the order they were sent) becomes one CLIENT span with ``railwatch.attempt.index``,
``.kind``, ``.decision``, ``railwatch.upstream.name`` (attempts name their upstream,
not its URL), ``gen_ai.request.model``, ``http.response.status_code`` and ``error.type``.
A record without attempts (pass-through, streams) gets one CLIENT span for its upstream
window (``upstream_offset_ms``, ``upstream_ms``) with ``url.full`` and ``server.*``.

Content: ``gen_ai.input.messages`` / ``gen_ai.output.messages`` (JSON strings in the
conventions' message shape) only with ``capture_content``, and then only what the
privacy setting let into the record. The record holds the prompt as one text with
roles flattened, so it is reported as one ``user`` message.

Attributes cost CPU (SDK validation, then OTLP encoding; about 10 us each here), so
values the tree already shows are left out: total time is the SERVER span's duration,
upstream time the CLIENT span's, the upstream URL is the CLIENT span's ``url.full``.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit

import orjson
from opentelemetry import trace as trace_api
from opentelemetry.context import Context
from opentelemetry.trace import SpanKind, Status, StatusCode

from exporters.otel._sdk import PresetIdGenerator
from sidecar import semconv as sc
from sidecar.record import DetectorRunRecord, TraceRecord

GENAI_ROUTES = frozenset((sc.OP_CHAT, sc.OP_TEXT_COMPLETION, sc.OP_EMBEDDINGS))
HTTP_ROUTES = {  # route -> http.route (the sidecar's, which is also the upstream's)
    sc.OP_CHAT: "/v1/chat/completions",
    sc.OP_TEXT_COMPLETION: "/v1/completions",
    sc.OP_EMBEDDINGS: "/v1/embeddings",
    sc.OP_MODELS: "/v1/models",
}


@lru_cache(maxsize=64)
def upstream_server(upstream: str) -> tuple[str | None, int | None]:
    """``server.address`` and ``server.port`` of an upstream base URL (port from scheme)."""
    try:
        parts = urlsplit(upstream)
        return parts.hostname, parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    except ValueError:
        return None, None


def _ns(epoch_s: float) -> int:
    return int(epoch_s * 1e9)


def http_span_name(r: TraceRecord) -> str:
    route = HTTP_ROUTES.get(r.route)
    return f"{r.method} {route}" if route else r.method


def span_name(r: TraceRecord) -> str:
    if r.route in GENAI_ROUTES:
        return f"{r.route} {r.model_requested}" if r.model_requested else r.route
    return http_span_name(r)


class SpanBuilder:
    """Starts and ends the spans of one record on ``tracer``; may raise on a malformed
    record (the exporter counts it). Runs on one thread at a time per builder."""

    def __init__(
        self,
        tracer: trace_api.Tracer,
        ids: PresetIdGenerator,
        *,
        provider_name: str,
        capture_content: bool,
    ) -> None:
        self.tracer = tracer
        self.ids = ids
        self.provider_name = provider_name
        self.capture_content = capture_content

    def build(self, r: TraceRecord) -> None:
        tracer = self.tracer
        start = _ns(r.started_at)
        end = max(_ns(r.ended_at), start)
        self.ids.preset(int(r.trace_id, 16), int(r.span_id, 16))
        try:
            span = tracer.start_span(
                span_name(r),
                context=self._parent_context(r),
                kind=SpanKind.SERVER,
                attributes=self.server_attributes(r),
                start_time=start,
            )
        finally:
            self.ids.preset(0, 0)  # unused (sampled out, SDK disabled): must not leak
        if not span.is_recording():
            return
        if r.error_type or r.status >= 500:
            span.set_status(Status(StatusCode.ERROR, r.error_type or str(r.status)))
        ctx = trace_api.set_span_in_context(span, Context())
        self._upstream_spans(r, ctx, start, end)
        run_end: dict[tuple[str, str], int] = {}
        stage_end: dict[str, int] = {}
        for run in r.detector_runs:
            e = self._detector_span(run, ctx, start)
            run_end.setdefault((run.stage, run.detector), e)
            stage_end[run.stage] = max(stage_end.get(run.stage, 0), e)
        for f in r.findings:  # stamped when the detector run that found it ended
            span.add_event(
                sc.GEN_AI_EVALUATION_RESULT,
                {
                    sc.GEN_AI_EVALUATION_NAME: f.detector,
                    sc.GEN_AI_EVALUATION_SCORE_VALUE: f.score,
                    sc.GEN_AI_EVALUATION_SCORE_LABEL: f.label,
                    sc.RAILWATCH_FINDING_STAGE: f.stage,
                    sc.RAILWATCH_FINDING_ACTION: f.action,
                    sc.RAILWATCH_FINDING_START: f.start,
                    sc.RAILWATCH_FINDING_END: f.end,
                },
                timestamp=min(run_end.get((f.stage, f.detector), end), end),
            )
        for d in r.decisions:  # stamped when the stage's last detector run ended
            span.add_event(
                sc.EVENT_DECISION,
                {
                    sc.RAILWATCH_DECISION_STAGE: d.stage,
                    sc.RAILWATCH_DECISION_ACTION: d.action,
                    sc.RAILWATCH_DECISION_REASONS: list(d.reasons),
                },
                timestamp=min(stage_end.get(d.stage, end), end),
            )
        span.end(end_time=end)

    def _parent_context(self, r: TraceRecord) -> Context:
        if not r.parent_span_id:
            return Context()  # explicit: never the worker thread's current context
        flags = getattr(r, "trace_flags", "01")
        parent = trace_api.SpanContext(
            int(r.trace_id, 16),
            int(r.parent_span_id, 16),
            is_remote=True,
            trace_flags=trace_api.TraceFlags(int(flags, 16) & trace_api.TraceFlags.SAMPLED),
        )
        return trace_api.set_span_in_context(trace_api.NonRecordingSpan(parent), Context())

    def server_attributes(self, r: TraceRecord) -> dict[str, Any]:
        a: dict[str, Any] = {
            sc.HTTP_REQUEST_METHOD: r.method,
            sc.URL_PATH: r.path,
            sc.RAILWATCH_REQUEST_ID: r.request_id,
            sc.RAILWATCH_DECISION: r.decision,
        }
        http_route = HTTP_ROUTES.get(r.route)
        if http_route is not None:
            a[sc.HTTP_ROUTE] = http_route
        if r.route in GENAI_ROUTES:
            a[sc.GEN_AI_OPERATION_NAME] = r.route
            a[sc.GEN_AI_PROVIDER_NAME] = self.provider_name
            a[sc.GEN_AI_REQUEST_STREAM] = r.stream
        else:
            a[sc.RAILWATCH_ROUTE] = r.route
        address, port = upstream_server(r.upstream)
        if address:
            a[sc.SERVER_ADDRESS] = address
        if port:
            a[sc.SERVER_PORT] = port
        if r.status:
            a[sc.HTTP_RESPONSE_STATUS_CODE] = r.status
        if r.retries:
            a[sc.RAILWATCH_RETRIES] = r.retries
        optional: tuple[tuple[str, Any], ...] = (
            (sc.GEN_AI_REQUEST_MODEL, r.model_requested),
            (sc.GEN_AI_REQUEST_TEMPERATURE, r.temperature),
            (sc.GEN_AI_REQUEST_TOP_P, r.top_p),
            (sc.GEN_AI_REQUEST_MAX_TOKENS, r.max_tokens),
            (sc.GEN_AI_REQUEST_CHOICE_COUNT, r.n),
            (sc.GEN_AI_RESPONSE_ID, r.response_id),
            (sc.GEN_AI_RESPONSE_MODEL, r.model_served),
            (sc.GEN_AI_OPENAI_RESPONSE_SYSTEM_FINGERPRINT, r.system_fingerprint),
            (sc.GEN_AI_USAGE_INPUT_TOKENS, r.prompt_tokens),
            (sc.GEN_AI_USAGE_OUTPUT_TOKENS, r.completion_tokens),
            (sc.GEN_AI_CONVERSATION_ID, r.conversation_id),
            (sc.RAILWATCH_TENANT, r.tenant),
            (sc.RAILWATCH_USER, r.user),
            (sc.RAILWATCH_HANDOFF_ID, r.handoff_id),
            (sc.RAILWATCH_USAGE_SOURCE, r.usage_source),
            (sc.RAILWATCH_OVERHEAD_MS, r.overhead_ms),
            (sc.RAILWATCH_TPOT_MS, r.tpot_ms),
        )
        for key, value in optional:
            if value is not None:
                a[key] = value
        if r.ttft_ms is not None:
            a[sc.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK] = r.ttft_ms / 1000.0
        if r.finish_reasons:
            a[sc.GEN_AI_RESPONSE_FINISH_REASONS] = list(r.finish_reasons)
        if r.client_disconnected:
            a[sc.RAILWATCH_CLIENT_DISCONNECTED] = True
        if r.error_type:
            a[sc.ERROR_TYPE] = r.error_type
        elif r.status >= 500:
            a[sc.ERROR_TYPE] = str(r.status)
        for key, value in r.attributes.items():  # the pipeline's own railwatch.* facts
            a.setdefault(key, value)
        if self.capture_content:
            self._content(r, a)
        return a

    @staticmethod
    def _content(r: TraceRecord, a: dict[str, Any]) -> None:
        if r.prompt_text is not None:
            a[sc.GEN_AI_INPUT_MESSAGES] = orjson.dumps(
                [{"role": "user", "parts": [{"type": "text", "content": r.prompt_text}]}]
            ).decode()
        if r.output_text is not None:
            a[sc.GEN_AI_OUTPUT_MESSAGES] = orjson.dumps(
                [{
                    "role": "assistant",
                    "parts": [{"type": "text", "content": r.output_text}],
                    "finish_reason": r.finish_reasons[0] if r.finish_reasons else "unknown",
                }]
            ).decode()
        if r.prompt_text is not None or r.output_text is not None:
            a[sc.RAILWATCH_CONTENT_MASKED] = r.text_masked

    def _upstream_spans(self, r: TraceRecord, ctx: Context, start: int, end: int) -> None:
        """One CLIENT span per upstream attempt (primary, retries, fallbacks).

        A record without ``attempts`` (pass-through, streams, requests without a policy
        route) gets one CLIENT span for its whole upstream window instead.
        """
        name = http_span_name(r)
        if r.attempts:
            for i, att in enumerate(r.attempts):
                a: dict[str, Any] = {
                    sc.HTTP_REQUEST_METHOD: r.method,
                    sc.RAILWATCH_ATTEMPT_INDEX: i,
                    sc.RAILWATCH_ATTEMPT_KIND: att.kind,
                    sc.RAILWATCH_ATTEMPT_DECISION: att.decision,
                    sc.RAILWATCH_UPSTREAM_NAME: att.upstream,
                }
                if att.model:
                    a[sc.GEN_AI_REQUEST_MODEL] = att.model
                if att.status:
                    a[sc.HTTP_RESPONSE_STATUS_CODE] = att.status
                s = start + int(att.offset_ms * 1e6)
                e = s + int(att.duration_ms * 1e6)
                self._child(ctx, name, SpanKind.CLIENT, a, s, min(e, end), att.error)
            return
        if r.upstream_offset_ms is None:
            return  # never sent
        base: dict[str, Any] = {
            sc.HTTP_REQUEST_METHOD: r.method,
            sc.URL_FULL: r.upstream + r.path,
            sc.RAILWATCH_UPSTREAM_ATTEMPTS: r.upstream_attempts,
        }
        address, port = upstream_server(r.upstream)
        if address:
            base[sc.SERVER_ADDRESS] = address
        if port:
            base[sc.SERVER_PORT] = port
        s = start + int(r.upstream_offset_ms * 1e6)
        e = s + int(r.upstream_ms * 1e6) if r.upstream_ms is not None else end
        error = r.error_type if r.error_type and r.error_type.startswith("upstream") else None
        self._child(ctx, name, SpanKind.CLIENT, base, s, min(e, end), error)

    def _detector_span(self, run: DetectorRunRecord, ctx: Context, start: int) -> int:
        s = start + int(run.offset_ms * 1e6)
        e = s + int(run.latency_ms * 1e6)
        a: dict[str, Any] = {
            sc.RAILWATCH_DETECTOR: run.detector,
            sc.RAILWATCH_DETECTOR_STAGE: run.stage,
            sc.RAILWATCH_DETECTOR_FINDINGS: run.findings,
        }
        if run.batch_size:
            a[sc.RAILWATCH_DETECTOR_BATCH_SIZE] = run.batch_size
        self._child(ctx, f"{sc.SPAN_DETECTOR} {run.detector}", SpanKind.INTERNAL, a, s, e,
                    run.error)
        return e

    def _child(
        self,
        ctx: Context,
        name: str,
        kind: SpanKind,
        attributes: dict[str, Any],
        start: int,
        end: int,
        error: str | None,
    ) -> None:
        if error:
            attributes[sc.ERROR_TYPE] = error
        child = self.tracer.start_span(name, context=ctx, kind=kind, attributes=attributes,
                                       start_time=start)
        if error:
            child.set_status(Status(StatusCode.ERROR, error))
        child.end(end_time=max(end, start))

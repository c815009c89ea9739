"""Emit stage: freeze the context into a TraceRecord and hand it to the exporters.

Runs once per request, in the request's ``finally`` (also for errors and client
disconnects). It never blocks and never raises into the request: it appends to the
record intake's queue, drained by a worker thread.

Privacy (``privacy.capture``, :mod:`sidecar.privacy`): ``raw`` keeps text as seen,
cut at ``max_text_chars`` here (a slice); under ``masked`` and ``none`` the record
leaves without text, and the intake's worker fills in what may be stored (text
masked from the guard's findings, identifiers pseudonymised) off the event loop.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from types import MappingProxyType
from typing import Protocol

from sidecar.context import RequestContext
from sidecar.pipeline.observe import note_response_format
from sidecar.privacy import CheckedText, StoragePrivacy
from sidecar.record import TraceRecord

logger = logging.getLogger(__name__)


class RecordSink(Protocol):
    """Where records go (:class:`exporters.journal.RecordIntake`); never blocks."""

    def submit(
        self, record: TraceRecord, finish: Callable[[TraceRecord], TraceRecord] | None = None
    ) -> None: ...


def _utf8(value: str) -> str:
    """``value`` as valid UTF-8 text (surrogate-escaped bytes replaced); cheap for ASCII."""
    if value.isascii():
        return value
    return value.encode("utf-8", "replace").decode("utf-8")


def _ms(start: float | None, end: float | None) -> float | None:
    if start is None or end is None:
        return None
    return round((end - start) * 1000.0, 4)


class Emitter:
    """Builds and submits trace records.

    ``keep_text`` is False when no exporter reads record text (Prometheus alone, OTLP
    without content capture, no exporter): records then never carry text, and nothing is
    masked for them (masking runs the PII detectors on every prompt and answer).
    """

    def __init__(
        self, sink: RecordSink, privacy: StoragePrivacy, *, keep_text: bool = True
    ) -> None:
        self.sink = sink
        self.privacy = privacy
        self.keep_text = keep_text
        self.emitted = 0

    def _raw_text(self, text: str | None) -> str | None:
        if text is None or not self.keep_text or self.privacy.capture != "raw":
            return None
        limit = self.privacy.max_chars
        return text[:limit] if len(text) > limit else text

    def build(self, ctx: RequestContext) -> TraceRecord:
        end = ctx.ended_at if ctx.ended_at is not None else time.perf_counter()
        total = (end - ctx.t0) * 1000.0
        upstream_ms = _ms(ctx.upstream_sent_at, ctx.upstream_done_at)
        ttft = tpot = None
        if ctx.stream and ctx.first_token_at is not None:
            ttft = _ms(ctx.t0, ctx.first_token_at)
            tokens = ctx.usage.completion_tokens
            last = ctx.last_token_at
            # both marks from one side (the client's); never negative whatever set them
            if tokens and tokens > 1 and last is not None and last >= ctx.first_token_at:
                tpot = round((last - ctx.first_token_at) * 1000.0 / (tokens - 1), 4)
        prompt = self._raw_text(ctx.prompt_text)
        output = self._raw_text(ctx.output_text)
        usage = ctx.usage
        total_tokens = usage.total_tokens
        if total_tokens is None and usage.prompt_tokens is not None:
            total_tokens = usage.prompt_tokens + (usage.completion_tokens or 0)
        return TraceRecord(
            request_id=ctx.request_id,
            trace_id=ctx.trace_id,
            span_id=ctx.span_id,
            parent_span_id=ctx.parent_span_id,
            started_at=ctx.started_at,
            ended_at=ctx.started_at + total / 1000.0,
            method=ctx.method,
            path=_utf8(ctx.path),
            route=ctx.route,
            upstream=ctx.upstream,
            trace_flags=ctx.trace_flags,
            tenant=ctx.tenant,
            user=_utf8(ctx.user) if ctx.user is not None else None,
            conversation_id=ctx.conversation_id,
            model_requested=ctx.model_requested,
            model_served=ctx.model_served,
            system_fingerprint=ctx.system_fingerprint,
            response_id=ctx.response_id,
            finish_reasons=tuple(ctx.finish_reasons),
            temperature=ctx.temperature,
            top_p=ctx.top_p,
            max_tokens=ctx.max_tokens,
            n=ctx.n,
            stream=ctx.stream,
            status=ctx.status,
            error_type=ctx.error_type,
            client_disconnected=ctx.client_disconnected,
            upstream_attempts=ctx.upstream_attempts,
            total_ms=round(total, 4),
            upstream_offset_ms=_ms(ctx.t0, ctx.upstream_sent_at),
            upstream_ms=upstream_ms,
            overhead_ms=round(total - upstream_ms, 4) if upstream_ms is not None else None,
            ttft_ms=ttft,
            tpot_ms=tpot,
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            total_tokens=total_tokens,
            usage_source=usage.source,
            prompt_text=prompt,
            output_text=output,
            text_masked=False,
            findings=tuple(ctx.findings),
            detector_runs=tuple(ctx.detector_runs),
            decisions=tuple(ctx.decisions),
            decision=ctx.decision,
            retries=ctx.retries,
            attempts=tuple(ctx.attempts),
            handoff_id=ctx.handoff_id,
            attributes=MappingProxyType(ctx.attributes) if ctx.attributes else MappingProxyType({}),
        )

    def emit_record(self, record: TraceRecord) -> None:
        """Submit a record built elsewhere (the SDK's, received by the sidecar): this
        sidecar's privacy setting applies to its text whatever the sender did."""
        finish = self._finisher(record.prompt_text, record.output_text, ())
        self.sink.submit(replace(record, prompt_text=self._raw_text(record.prompt_text),
                                 output_text=self._raw_text(record.output_text),
                                 text_masked=False), finish)
        self.emitted += 1

    def emit(self, ctx: RequestContext) -> None:
        """Build and submit the record. Never raises: a bug here must not fail the request."""
        try:
            note_response_format(ctx)  # report's JSON validity counts the requests that asked
            record = self.build(ctx)
        except Exception:
            logger.exception("could not build the trace record for request %s", ctx.request_id)
            return
        self.sink.submit(record, self._finisher(ctx.prompt_text, ctx.output_text,
                                                ctx.privacy_checked))
        self.emitted += 1

    def _finisher(self, prompt: str | None, output: str | None,
                  checked: Sequence[CheckedText]) -> Callable[[TraceRecord], TraceRecord] | None:
        """The intake's finishing step: text only when an exporter reads it (identifiers
        are pseudonymised either way)."""
        if not self.keep_text:
            return self.privacy.finisher(None, None, ())
        return self.privacy.finisher(prompt, output, checked)

"""Trace identity for SDK calls: one context per call, nested under ``@observe`` and OTel.

A guarded or observed call gets a :class:`~sidecar.context.RequestContext` whose
trace continues, in this order: the enclosing railwatch call (``@observe`` or an
outer guarded call: same trace id, its span as parent), else the current
OpenTelemetry span (the app's own tracing), else a new trace. The context is kept
in a ``contextvars.ContextVar``, so threads and asyncio tasks each see their own.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator, Mapping
from typing import Any

from sidecar import semconv
from sidecar.context import RequestContext
from sidecar.tracecontext import new_span_id, new_trace_id

SOURCE = "sdk"
_current: contextvars.ContextVar[RequestContext | None] = contextvars.ContextVar(
    "railwatch_sdk_call", default=None
)


def _parent() -> tuple[str, str | None, str]:
    """(trace id, parent span id, flags) for a new call."""
    outer = _current.get()
    if outer is not None:
        return outer.trace_id, outer.span_id, outer.trace_flags
    try:
        from opentelemetry import trace

        span = trace.get_current_span().get_span_context()
        if span.is_valid:
            return (format(span.trace_id, "032x"), format(span.span_id, "016x"),
                    "01" if span.trace_flags.sampled else "00")
    except ImportError:  # pragma: no cover - opentelemetry-api is a dependency
        pass
    return new_trace_id(), None, "01"


def new_context(name: str, op: str, body: Mapping[str, Any] | None) -> RequestContext:
    """The context of one SDK call named ``name``; ``body`` (OpenAI-shaped) fills the
    request facts (model, sampling, prompt text) as the proxy's ingress would."""
    trace_id, parent, flags = _parent()
    ctx = RequestContext(
        request_id=new_trace_id(), trace_id=trace_id, span_id=new_span_id(),
        parent_span_id=parent, trace_flags=flags, method="CALL",
        path=f"sdk/{name}"[:256], route=op, upstream=f"sdk:{name}"[:256],
    )
    ctx.attributes[semconv.ATTR_SOURCE] = SOURCE
    if body is not None:
        from sidecar.pipeline import ingress  # on the first call: it brings aiohttp

        ctx.body = dict(body)
        if op == semconv.OP_CHAT:
            ingress.check_chat(ctx.body, ctx)
        elif op == semconv.OP_TEXT_COMPLETION:
            ingress.check_completion(ctx.body, ctx)
        else:  # a plain function: its input texts, as the text shape put them
            texts = ctx.body.get("input") or ()
            ctx.prompt_text = "\n".join(t for t in texts if isinstance(t, str)) or None
    return ctx


@contextlib.contextmanager
def activate(ctx: RequestContext) -> Iterator[RequestContext]:
    token = _current.set(ctx)
    try:
        yield ctx
    finally:
        _current.reset(token)


def current() -> RequestContext | None:
    return _current.get()


def current_trace_id() -> str | None:
    """The trace id of the guarded or observed call this code runs in (None outside
    one). Public as ``sidecar.sdk.current_trace_id``."""
    ctx = _current.get()
    return ctx.trace_id if ctx is not None else None

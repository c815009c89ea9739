"""The context adopts an attempt's answer facts; stream timings never mix clocks."""

from __future__ import annotations

from sidecar.context import AnswerFacts, RequestContext
from sidecar.pipeline.emit import Emitter
from sidecar.privacy import StoragePrivacy
from sidecar.settings import PrivacySettings


def _ctx() -> RequestContext:
    ctx = RequestContext(request_id="1" * 32, trace_id="2" * 32, span_id="3" * 16,
                         parent_span_id=None, trace_flags="01", method="POST",
                         path="/v1/chat/completions", route="chat", upstream="u")
    ctx.stream = True
    ctx.usage.completion_tokens = 5
    return ctx


def _tpot(ctx: RequestContext) -> float | None:
    emitter = Emitter(_Sink(), StoragePrivacy(PrivacySettings(capture="none"), None, b""))
    return emitter.build(ctx).tpot_ms


class _Sink:
    def submit(self, record: object, finish: object = None) -> None:
        pass


def test_facts_timings_are_taken_only_as_a_pair() -> None:
    ctx = _ctx()
    ctx.first_token_at = ctx.t0 + 0.5  # the client-side release time
    ctx.adopt(AnswerFacts(first_token_at=ctx.t0 + 0.1, last_token_at=ctx.t0 + 0.2))
    assert (ctx.first_token_at, ctx.last_token_at) == (ctx.t0 + 0.5, None)
    other = _ctx()
    facts = AnswerFacts(first_token_at=other.t0 + 0.1, last_token_at=other.t0 + 0.3)
    facts.usage.completion_tokens = 5
    other.adopt(facts)
    assert (other.first_token_at, other.last_token_at) == (other.t0 + 0.1, other.t0 + 0.3)
    assert _tpot(other) == 50.0


def test_tpot_is_never_negative() -> None:
    ctx = _ctx()
    ctx.first_token_at, ctx.last_token_at = ctx.t0 + 0.5, ctx.t0 + 0.2
    assert _tpot(ctx) is None

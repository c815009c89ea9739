"""The request's final decision changes only through the context's three methods:
``escalate`` (by severity, never down), ``settle`` (the chosen outcome replaces) and
``override`` (the sidecar's own block or hand-off replaces, whatever the severity, and
a later ``settle`` keeps it)."""

from __future__ import annotations

import itertools

import pytest

from sidecar.context import RequestContext
from sidecar.pipeline.emit import Emitter
from sidecar.privacy import StoragePrivacy
from sidecar.settings import PrivacySettings

# least to most severe, written out here so that a changed order in the policy fails
ORDER = ["pass", "flag", "mask", "retry", "fallback", "handoff", "block"]


def _ctx() -> RequestContext:
    return RequestContext(request_id="1" * 32, trace_id="2" * 32, span_id="3" * 16,
                          parent_span_id=None, trace_flags="01", method="POST",
                          path="/v1/chat/completions", route="chat", upstream="u")


class _Sink:
    def submit(self, record: object, finish: object = None) -> None:
        pass


def test_a_new_request_passes() -> None:
    assert _ctx().decision == "pass"


@pytest.mark.parametrize(("first", "second"), list(itertools.product(ORDER, ORDER)))
def test_escalate_keeps_the_more_severe(first: str, second: str) -> None:
    ctx = _ctx()
    ctx.escalate(first)
    ctx.escalate(second)
    assert ctx.decision == max(first, second, key=ORDER.index)


def test_escalate_never_falls_back_to_pass() -> None:
    ctx = _ctx()
    for action in ("retry", "mask", "pass", "flag"):
        ctx.escalate(action)
    assert ctx.decision == "retry"


def test_escalate_refuses_an_unknown_action() -> None:
    ctx = _ctx()
    with pytest.raises(KeyError):
        ctx.escalate("allow")
    assert ctx.decision == "pass"


def test_settle_replaces_what_a_discarded_attempt_escalated() -> None:
    ctx = _ctx()
    ctx.escalate("mask")  # the input stage
    ctx.escalate("retry")  # the primary's answer, retried
    ctx.escalate("pass")  # the retry's answer, delivered
    assert ctx.decision == "retry"
    ctx.settle("mask", "pass")
    assert ctx.decision == "mask"


@pytest.mark.parametrize(("input_action", "output_action"),
                         list(itertools.product(ORDER[:3], ORDER[:3])))
def test_settle_takes_the_most_severe_of_its_stages(input_action: str,
                                                    output_action: str) -> None:
    ctx = _ctx()
    ctx.escalate("fallback")
    ctx.settle(input_action, output_action)
    assert ctx.decision == max(input_action, output_action, key=ORDER.index)


def test_override_replaces_even_a_more_severe_decision() -> None:
    ctx = _ctx()
    ctx.escalate("block")  # the input guard blocked ...
    ctx.override("handoff")  # ... and a conversation trigger sent it to a person
    assert ctx.decision == "handoff"
    ctx.override("block")  # a late stream cut
    assert ctx.decision == "block"


@pytest.mark.parametrize("final", ["block", "handoff"])
def test_settle_keeps_an_override(final: str) -> None:
    ctx = _ctx()
    ctx.escalate("retry")  # a late window of a stream that already went out ...
    ctx.override(final)  # type: ignore[arg-type]  # ... cut it
    ctx.settle("pass", "flag")  # the delivered attempt settles after the cut
    assert ctx.decision == final


def test_override_is_only_for_block_and_handoff() -> None:
    ctx = _ctx()
    for action in ("pass", "flag", "mask", "retry", "fallback"):
        with pytest.raises(ValueError, match="not a final override"):
            ctx.override(action)  # type: ignore[arg-type]
    assert ctx.decision == "pass"


def test_decision_cannot_be_assigned_around_the_api() -> None:
    ctx = _ctx()
    with pytest.raises(AttributeError):
        ctx.decision = "block"  # type: ignore[misc]
    assert ctx.decision == "pass"
    with pytest.raises(TypeError):
        RequestContext("1" * 32, "2" * 32, "3" * 16, None, "01", "POST", "/",  # type: ignore[call-arg]
                       "chat", "u", _decision="block")


def test_the_trace_record_carries_the_final_decision() -> None:
    ctx = _ctx()
    ctx.escalate("mask")
    ctx.override("handoff")
    emitter = Emitter(_Sink(), StoragePrivacy(PrivacySettings(capture="none"), None, b""))
    assert emitter.build(ctx).decision == "handoff"


@pytest.mark.parametrize(
    ("mode", "action", "recorded"),
    [
        ("windowed", "pass", "pass"),
        ("windowed", "flag", "flag"),  # also a spent retry, delivered flagged
        ("windowed", "mask", "mask"),
        ("windowed", "retry", None),  # a stop under way: block
        ("windowed", "fallback", None),
        ("windowed", "block", None),
        ("windowed", "handoff", None),
        ("buffered", "block", None),
        ("passthrough", "retry", "retry"),  # for the record only
        ("passthrough", "block", "block"),
    ],
)
def test_a_delivered_stream_records_its_windows_verdict(
    mode: str, action: str, recorded: str | None
) -> None:
    from sidecar.pipeline.streaming import delivered_stream_action
    from sidecar.policy import Decision

    assert delivered_stream_action(mode, Decision(action, ("d:l",))) == recorded

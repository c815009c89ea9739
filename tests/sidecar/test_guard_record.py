"""Findings go on the trace in a worker thread when a stage triggered many of them."""

from __future__ import annotations

import asyncio

import pytest

from detectors.base import TextContext
from sidecar.app import build_guard
from sidecar.context import RequestContext
from sidecar.pipeline.guard import MAX_RECORDED_FINDINGS, RECORD_OFFLOAD_FINDINGS, Guard, Segment
from sidecar.policy import default_policy_path, load_policy

UNIT = "contact jane.doe{i}@example.com card 4111 1111 1111 1111 please. "


def _ctx() -> RequestContext:
    return RequestContext(request_id="1" * 32, trace_id="2" * 32, span_id="3" * 16,
                          parent_span_id=None, trace_flags="01", method="POST",
                          path="/v1/chat/completions", route="chat", upstream="u")


@pytest.mark.parametrize("units", [3, 200])
async def test_record_off_loop_puts_every_finding_on_the_trace(units: int) -> None:
    guard = build_guard(load_policy(str(default_policy_path())))
    await guard.runner.start()
    try:
        route = guard.route_for("/v1/chat/completions", None, None)
        assert route is not None
        text = "".join(UNIT.format(i=i) for i in range(units))
        result = await guard.run_stage(route, "input", [Segment(("x",), text, TextContext())])
        triggered = sum(len(d.triggered) for d in result.decisions)
        assert (triggered > RECORD_OFFLOAD_FINDINGS) == (units == 200)
        on_loop, off_loop = _ctx(), _ctx()
        Guard.record(on_loop, "input", result)
        await Guard.record_off_loop(off_loop, "input", result)
        assert off_loop.findings == on_loop.findings
        assert len(off_loop.findings) == min(triggered, MAX_RECORDED_FINDINGS)
        assert off_loop.decision == on_loop.decision == "mask"

        if units < 200:
            return
        cancelled = _ctx()  # the client leaves while the thread records
        task = asyncio.ensure_future(Guard.record_off_loop(cancelled, "input", result))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert cancelled.findings == on_loop.findings  # finished before the task ended
    finally:
        await guard.runner.close()


async def test_queued_detectors_batch_only_when_calls_overlap() -> None:
    """Alone, a queued detector (the default policy's toxicity) is called directly;
    concurrent requests and /v1/guardrails/check calls still form batches."""
    from sidecar.pipeline.inflight import InFlight

    in_flight = InFlight()
    guard = build_guard(load_policy(str(default_policy_path())), in_flight)
    await guard.runner.start()
    lane = guard.runner._lanes["toxicity"]
    try:
        route = guard.route_for("/v1/chat/completions", None, None)
        assert route is not None
        in_flight.count = 1  # this request alone
        await guard.run_stage(route, "input", [Segment(("x",), "hello there", TextContext())])
        assert (lane.batches, lane.max_batch_size) == (1, 1)
        in_flight.count = 0  # the proxy idle: checks still queue, and batch together
        await asyncio.gather(*(guard.check_text(f"text number {i}", "input", route)
                               for i in range(4)))
        assert lane.max_batch_size == 4
        in_flight.count = 2  # two requests: their stages queue and batch too
        await asyncio.gather(*(guard.run_stage(route, "input", [Segment(("x",), t, TextContext())])
                               for t in ("one", "two")))
        assert lane.last_batch_size == 2
    finally:
        await guard.runner.close()

"""detectors.runner: batching, threads, timeouts, errors, life cycle.

The detectors here are real classes that record what they were asked; no timing is
asserted, only what happened (how many detect calls, with which texts, in which
thread). Waits on the loop use generous bounds that only a hang would reach.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest

from detectors.base import Finding, TextContext
from detectors.errors import (
    DetectorConfigError,
    DetectorStartError,
    DetectorTimeoutError,
    UnknownDetectorError,
)
from detectors.runner import (
    DETECTOR_ERROR_LABEL,
    BatchReport,
    DetectionOutcome,
    DetectorRunner,
    RunSettings,
)

SECRET_TEXT = "my card is 4111 1111 1111 1111 and password hunter2"
HANG_S = 30.0  # "forever" for a detector; tests release it long before


class Recorder:
    """Records each detect call; one LEN finding per text, carrying the text's index."""

    def __init__(
        self,
        name: str,
        *,
        blocking: bool = False,
        async_sleep: float = 0.0,
        raise_exc: BaseException | None = None,
        wrong_count: bool = False,
    ) -> None:
        self.name = name
        self.blocking = blocking
        self.async_sleep = async_sleep
        self.raise_exc = raise_exc
        self.wrong_count = wrong_count
        self.calls: list[list[str]] = []
        self.contexts: list[Sequence[TextContext] | None] = []
        self.threads: list[threading.Thread] = []
        self.gate = threading.Event()  # blocking detect waits on it when `hold` is set
        self.hold = False
        self.entered = threading.Event()
        self.started = 0
        self.closed = 0

    async def start(self) -> None:
        self.started += 1

    async def close(self) -> None:
        self.closed += 1

    def state(self) -> dict[str, Any]:
        return {"calls": len(self.calls)}

    def _answer(self, texts: Sequence[str]) -> list[list[Finding]]:
        if self.raise_exc is not None:
            raise self.raise_exc
        results = [[Finding(self.name, "LEN", 0.5, 0, len(t), {"len": len(t)})] for t in texts]
        return results[:-1] if self.wrong_count else results

    async def detect(
        self, texts: Sequence[str], contexts: Sequence[TextContext] | None = None
    ) -> list[list[Finding]]:
        self.calls.append(list(texts))
        self.contexts.append(contexts)
        self.threads.append(threading.current_thread())
        if self.async_sleep:
            await asyncio.sleep(self.async_sleep)
        return self._answer(texts)

    def detect_sync(
        self, texts: Sequence[str], contexts: Sequence[TextContext] | None = None
    ) -> list[list[Finding]]:
        self.calls.append(list(texts))
        self.contexts.append(contexts)
        self.threads.append(threading.current_thread())
        self.entered.set()
        if self.hold:
            self.gate.wait(HANG_S)
        return self._answer(texts)


@pytest.fixture
async def runner() -> AsyncIterator[DetectorRunner]:
    created = DetectorRunner()
    yield created
    for lane in created._lanes.values():  # never leave a test thread waiting
        detector = lane.detector
        if isinstance(detector, Recorder):
            detector.gate.set()
    await created.close()


async def started(runner: DetectorRunner, *detectors: tuple[Recorder, RunSettings]) -> None:
    for detector, settings in detectors:
        runner.add(detector, settings)  # type: ignore[arg-type]
    await runner.start()


def texts(n: int) -> list[str]:
    return ["x" * (i + 1) for i in range(n)]  # distinct lengths identify each text


def assert_answers(outcomes: Sequence[DetectionOutcome], sent: Sequence[str]) -> None:
    assert [o.error for o in outcomes] == [None] * len(sent)
    assert [o.findings[0].metadata["len"] for o in outcomes] == [len(t) for t in sent]


async def wait_thread_entered(detector: Recorder) -> None:
    assert await asyncio.to_thread(detector.entered.wait, HANG_S)


# -- batching ----------------------------------------------------------------------


async def test_concurrent_calls_share_one_detect_call(runner: DetectorRunner) -> None:
    model = Recorder("model", blocking=True)
    await started(runner, (model, RunSettings(max_batch=32)))
    sent = texts(10)
    outcomes = await asyncio.gather(*(runner.run("model", t) for t in sent))
    assert model.calls == [sent]  # one call, texts in submission order
    assert_answers(outcomes, sent)
    assert [o.batch_size for o in outcomes] == [10] * 10


async def test_max_batch_splits_in_order(runner: DetectorRunner) -> None:
    model = Recorder("model", blocking=True)
    await started(runner, (model, RunSettings(max_batch=4)))
    sent = texts(10)
    outcomes = await asyncio.gather(*(runner.run("model", t) for t in sent))
    assert model.calls == [sent[0:4], sent[4:8], sent[8:10]]
    assert_answers(outcomes, sent)
    assert [o.batch_size for o in outcomes] == [4] * 8 + [2] * 2


async def test_items_arriving_during_a_batch_form_the_next(runner: DetectorRunner) -> None:
    model = Recorder("model", blocking=True)
    model.hold = True
    await started(runner, (model, RunSettings(max_batch=32, max_wait_ms=0)))
    first = asyncio.ensure_future(runner.run("model", "a"))
    await wait_thread_entered(model)
    later = [asyncio.ensure_future(runner.run("model", t)) for t in texts(5)]
    await asyncio.sleep(0.01)
    assert model.calls == [["a"]]  # nothing else sent while the thread is busy
    model.gate.set()
    outcomes = await asyncio.gather(first, *later)
    assert model.calls == [["a"], texts(5)]
    assert_answers(outcomes, ["a", *texts(5)])


async def test_max_wait_collects_calls_from_later_loop_turns(runner: DetectorRunner) -> None:
    model = Recorder("model", blocking=True)
    await started(runner, (model, RunSettings(max_batch=32, max_wait_ms=500)))
    tasks = []
    for text in texts(4):
        tasks.append(asyncio.ensure_future(runner.run("model", text)))
        for _ in range(3):
            await asyncio.sleep(0)  # separate loop turns, far inside the window
    outcomes = await asyncio.gather(*tasks)
    assert model.calls == [texts(4)]
    assert_answers(outcomes, texts(4))


async def test_full_batch_does_not_wait_for_the_window(runner: DetectorRunner) -> None:
    model = Recorder("model", blocking=True)
    # A window longer than the bound below: only a full batch can finish in time.
    await started(runner, (model, RunSettings(max_batch=3, max_wait_ms=60_000, timeout_s=60)))
    outcomes = await asyncio.wait_for(
        asyncio.gather(*(runner.run("model", t) for t in texts(3))), timeout=10
    )
    assert model.calls == [texts(3)]
    assert_answers(outcomes, texts(3))


async def test_non_blocking_idle_runs_inline_in_the_caller(runner: DetectorRunner) -> None:
    regex = Recorder("regex")
    await started(runner, (regex, RunSettings()))
    outcome = await runner.run("regex", "hello")
    assert regex.calls == [["hello"]]
    assert regex.threads == [threading.current_thread()]
    assert outcome.batch_size == 1
    assert outcome.findings[0].metadata["len"] == 5


async def test_non_blocking_backlog_is_batched(runner: DetectorRunner) -> None:
    # A non-blocking detector that suspends: the first call runs inline, the calls
    # that arrive meanwhile are queued and go together once it finishes.
    slow = Recorder("slow", async_sleep=0.02)
    await started(runner, (slow, RunSettings(max_batch=32)))
    sent = texts(5)
    outcomes = await asyncio.gather(*(runner.run("slow", t) for t in sent))
    assert slow.calls == [sent[:1], sent[1:]]
    assert_answers(outcomes, sent)


async def test_inline_false_queues_non_blocking(runner: DetectorRunner) -> None:
    regex = Recorder("regex")
    await started(runner, (regex, RunSettings(inline=False)))
    sent = texts(6)
    outcomes = await asyncio.gather(*(runner.run("regex", t) for t in sent))
    assert regex.calls == [sent]
    assert_answers(outcomes, sent)


async def test_contexts_are_passed_and_filled(runner: DetectorRunner) -> None:
    model = Recorder("model", blocking=True)
    await started(runner, (model, RunSettings()))
    ctx = TextContext(stage="input")
    await asyncio.gather(runner.run("model", "a", ctx), runner.run("model", "b"))
    assert model.contexts[-1] == [ctx, TextContext()]
    await asyncio.gather(runner.run("model", "a"), runner.run("model", "b"))
    assert model.contexts[-1] is None


# -- threads -----------------------------------------------------------------------


async def test_blocking_detector_runs_off_the_loop(runner: DetectorRunner) -> None:
    model = Recorder("model", blocking=True)
    await started(runner, (model, RunSettings()))
    await runner.run("model", "hello")
    (thread,) = model.threads
    assert thread is not threading.current_thread()
    assert thread.name.startswith("railwatch-detector-model")


async def test_slow_model_does_not_hold_up_a_regex_detector(runner: DetectorRunner) -> None:
    model = Recorder("model", blocking=True)
    model.hold = True
    regex = Recorder("regex")
    await started(runner, (model, RunSettings(timeout_s=HANG_S)), (regex, RunSettings()))
    stuck = asyncio.ensure_future(runner.run("model", "a"))
    await wait_thread_entered(model)
    outcome = await runner.run("regex", "b")
    assert outcome.ok and not stuck.done()
    model.gate.set()
    assert (await stuck).ok


# -- timeouts and errors -------------------------------------------------------------


def expected_error_findings(name: str, text: str, code: str, on_error: str) -> tuple:
    if on_error == "fail_open":
        return ()
    return (Finding(name, DETECTOR_ERROR_LABEL, 1.0, 0, len(text), {"error": code}),)


@pytest.mark.parametrize("on_error", ["fail_open", "fail_closed"])
async def test_async_timeout(runner: DetectorRunner, on_error: str) -> None:
    slow = Recorder("slow", async_sleep=HANG_S)
    await started(runner, (slow, RunSettings(timeout_s=0.05, on_error=on_error)))
    outcome = await runner.run("slow", SECRET_TEXT)
    assert outcome.error == "timeout"
    assert outcome.failed_closed is (on_error == "fail_closed")
    assert outcome.findings == expected_error_findings("slow", SECRET_TEXT, "timeout", on_error)
    assert not outcome.ok
    assert runner.state()["detectors"]["slow"]["errors"]["timeout"] == 1


@pytest.mark.parametrize("on_error", ["fail_open", "fail_closed"])
async def test_thread_timeout_keeps_the_stuck_slot(runner: DetectorRunner, on_error: str) -> None:
    model = Recorder("model", blocking=True)
    model.hold = True
    await started(runner, (model, RunSettings(timeout_s=0.05, on_error=on_error)))
    first = await runner.run("model", "a")
    assert first.error == "timeout"
    assert first.findings == expected_error_findings("model", "a", "timeout", on_error)
    assert first.batch_size == 1
    # The thread is still stuck: the next call waits in the queue and times out
    # without piling a second call on the model.
    second = await runner.run("model", "bb")
    assert second.error == "timeout"
    assert second.batch_size == 0
    assert model.calls == [["a"]]
    model.gate.set()
    for _ in range(1000):  # the slot frees when the thread returns
        if runner.state()["detectors"]["model"]["in_flight"] == 0:
            break
        await asyncio.sleep(0.01)
    model.hold = False
    third = await runner.run("model", "ccc")
    assert third.ok
    assert model.calls == [["a"], ["ccc"]]


@pytest.mark.parametrize("on_error", ["fail_open", "fail_closed"])
@pytest.mark.parametrize("blocking", [False, True])
async def test_crash_is_an_outcome_and_logs_no_text(
    runner: DetectorRunner, caplog: pytest.LogCaptureFixture, on_error: str, blocking: bool
) -> None:
    broken = Recorder("broken", blocking=blocking, raise_exc=ValueError(f"bad input {SECRET_TEXT}"))
    await started(runner, (broken, RunSettings(on_error=on_error)))
    with caplog.at_level(logging.WARNING, logger="detectors.runner"):
        outcomes = await asyncio.gather(*(runner.run("broken", SECRET_TEXT) for _ in range(3)))
    for outcome in outcomes:
        assert outcome.error == "crashed"
        assert outcome.failed_closed is (on_error == "fail_closed")
        assert outcome.findings == expected_error_findings(
            "broken", SECRET_TEXT, "crashed", on_error
        )
    assert "detector broken crashed: ValueError" in caplog.text
    assert "hunter2" not in caplog.text and "4111" not in caplog.text


async def test_wrong_result_count_is_a_crash(runner: DetectorRunner) -> None:
    liar = Recorder("liar", wrong_count=True)
    await started(runner, (liar, RunSettings(inline=False)))
    outcomes = await asyncio.gather(runner.run("liar", "a"), runner.run("liar", "b"))
    assert [o.error for o in outcomes] == ["crashed", "crashed"]


async def test_detector_can_choose_its_error_code(runner: DetectorRunner) -> None:
    upstream = Recorder("remote", raise_exc=DetectorTimeoutError("remote API timed out"))
    await started(runner, (upstream, RunSettings()))
    assert (await runner.run("remote", "a")).error == "timeout"


async def test_warnings_are_rate_limited(
    runner: DetectorRunner, caplog: pytest.LogCaptureFixture
) -> None:
    broken = Recorder("broken", raise_exc=RuntimeError("x"))
    await started(runner, (broken, RunSettings()))
    with caplog.at_level(logging.WARNING, logger="detectors.runner"):
        for _ in range(20):
            await runner.run("broken", "a")
    assert caplog.text.count("crashed: RuntimeError") == 1


async def test_cancelled_caller_leaves_the_lane_usable(runner: DetectorRunner) -> None:
    model = Recorder("model", blocking=True)
    model.hold = True
    await started(runner, (model, RunSettings(timeout_s=HANG_S)))
    first = asyncio.ensure_future(runner.run("model", "a"))
    await wait_thread_entered(model)
    waiting = asyncio.ensure_future(runner.run("model", "bb"))
    await asyncio.sleep(0)
    waiting.cancel()
    model.gate.set()
    assert (await first).ok
    with pytest.raises(asyncio.CancelledError):
        await waiting
    model.hold = False
    assert (await runner.run("model", "ccc")).ok
    assert ["bb"] not in model.calls  # the abandoned item never reached the model


# -- latency and metrics -------------------------------------------------------------


async def test_latency_and_batch_sizes_are_recorded() -> None:
    reports: list[BatchReport] = []
    runner = DetectorRunner(on_batch=reports.append)
    model = Recorder("model", blocking=True)
    runner.add(model, RunSettings(max_batch=4))  # type: ignore[arg-type]
    await runner.start()
    try:
        outcomes = await asyncio.gather(*(runner.run("model", t) for t in texts(6)))
    finally:
        await runner.close()
    assert all(o.latency_ms > 0 for o in outcomes)
    assert [(r.detector, r.size, r.error) for r in reports] == [
        ("model", 4, None),
        ("model", 2, None),
    ]
    assert all(r.latency_ms > 0 for r in reports)
    lane = runner.state()["detectors"]["model"]
    assert (lane["batches"], lane["items"], lane["last_batch_size"], lane["max_batch_size"]) == (
        2,
        6,
        2,
        4,
    )
    assert lane["detect_ms_total"] > 0


async def test_failing_metrics_hook_does_not_break_requests() -> None:
    def hook(report: BatchReport) -> None:
        raise RuntimeError("exporter down")

    runner = DetectorRunner(on_batch=hook)
    runner.add(Recorder("regex"), RunSettings())  # type: ignore[arg-type]
    await runner.start()
    try:
        assert (await runner.run("regex", "a")).ok
    finally:
        await runner.close()


# -- run_many ------------------------------------------------------------------------


async def test_run_many_keeps_order_and_runs_concurrently(runner: DetectorRunner) -> None:
    # "model" holds its thread until "signal" has run: run one after the other,
    # "model" would time out.
    model = Recorder("model", blocking=True)
    model.hold = True

    class Signal(Recorder):
        async def detect(
            self, texts: Sequence[str], contexts: Sequence[TextContext] | None = None
        ) -> list[list[Finding]]:
            await asyncio.to_thread(model.entered.wait, HANG_S)
            model.gate.set()
            return await super().detect(texts, contexts)

    signal = Signal("signal")
    regex = Recorder("regex")
    await started(
        runner,
        (model, RunSettings(timeout_s=5)),
        (signal, RunSettings(timeout_s=5)),
        (regex, RunSettings()),
    )
    outcomes = await runner.run_many(["regex", "model", "signal"], "hello")
    assert [o.detector for o in outcomes] == ["regex", "model", "signal"]
    assert [o.error for o in outcomes] == [None, None, None]
    assert [o.findings[0].detector for o in outcomes] == ["regex", "model", "signal"]


async def test_run_many_batches_across_requests(runner: DetectorRunner) -> None:
    model = Recorder("model", blocking=True)
    regex = Recorder("regex")
    await started(runner, (model, RunSettings()), (regex, RunSettings()))
    results = await asyncio.gather(*(runner.run_many(["model", "regex"], t) for t in texts(5)))
    assert model.calls == [texts(5)]
    for sent, (from_model, from_regex) in zip(texts(5), results, strict=True):
        assert from_model.findings[0].metadata["len"] == len(sent)
        assert from_regex.findings[0].metadata["len"] == len(sent)


async def test_unknown_detector_name(runner: DetectorRunner) -> None:
    await started(runner, (Recorder("regex"), RunSettings()))
    with pytest.raises(UnknownDetectorError):
        await runner.run("nope", "a")
    with pytest.raises(UnknownDetectorError):
        await runner.run_many(["regex", "nope"], "a")


# -- configuration and life cycle ----------------------------------------------------


def test_duplicate_name_and_missing_detect_sync() -> None:
    runner = DetectorRunner()
    runner.add(Recorder("a"))  # type: ignore[arg-type]
    with pytest.raises(DetectorConfigError, match="two detectors are named 'a'"):
        runner.add(Recorder("a"))  # type: ignore[arg-type]

    class NoSync:
        name = "nosync"
        blocking = True

        async def start(self) -> None: ...
        async def detect(self, texts: Any, contexts: Any = None) -> Any: ...
        async def close(self) -> None: ...

    with pytest.raises(DetectorConfigError, match="no detect_sync"):
        runner.add(NoSync())  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("settings", "key"),
    [
        ({"max_batch": 0}, "max_batch"),
        ({"timeout_s": 0}, "timeout_s"),
        ({"on_error": "ignore"}, "on_error"),
        ({"max_wait_ms": -1}, "max_wait_ms"),
        ({"batch": 4}, "batch"),
    ],
)
def test_run_settings_are_validated(settings: dict, key: str) -> None:
    with pytest.raises(Exception) as caught:
        RunSettings.model_validate(settings)
    assert caught.value.errors()[0]["loc"] == (key,)  # type: ignore[attr-defined]


async def test_start_runs_detectors_concurrently(runner: DetectorRunner) -> None:
    # Each start waits for the other to have begun: sequential starts would hang.
    began = {"a": asyncio.Event(), "b": asyncio.Event()}

    class Mutual(Recorder):
        async def start(self) -> None:
            began[self.name].set()
            other = "b" if self.name == "a" else "a"
            await began[other].wait()
            await super().start()

    await asyncio.wait_for(
        started(runner, (Mutual("a"), RunSettings()), (Mutual("b"), RunSettings())), timeout=10
    )
    state = runner.state()
    assert state["ready"] is True
    assert state["detectors"]["a"]["started"] and state["detectors"]["b"]["started"]


async def test_start_failure_names_detector_and_leaves_it_unavailable(
    runner: DetectorRunner,
) -> None:
    class NoModel(Recorder):
        async def start(self) -> None:
            raise FileNotFoundError("model dir /models/tox missing")

    good = Recorder("good")
    runner.add(good)  # type: ignore[arg-type]
    runner.add(NoModel("tox", blocking=True))  # type: ignore[arg-type]
    with pytest.raises(DetectorStartError, match=r"tox \(FileNotFoundError: model dir"):
        await runner.start()
    state = runner.state()
    assert state["ready"] is False
    assert state["detectors"]["tox"]["start_error"] == "FileNotFoundError"
    assert state["detectors"]["good"]["started"] is True
    outcome = await runner.run("tox", "a")
    assert outcome.error == "unavailable"
    assert (await runner.run("good", "a")).ok


async def test_not_started_is_unavailable_and_fail_closed(runner: DetectorRunner) -> None:
    runner.add(Recorder("late"), RunSettings(on_error="fail_closed"))  # type: ignore[arg-type]
    outcome = await runner.run("late", "abc")
    assert outcome.error == "unavailable"
    assert outcome.findings == expected_error_findings("late", "abc", "unavailable", "fail_closed")


async def test_close_answers_queued_work_and_closes_detectors() -> None:
    runner = DetectorRunner()
    model = Recorder("model", blocking=True)
    model.hold = True
    regex = Recorder("regex")
    runner.add(model, RunSettings(timeout_s=HANG_S))  # type: ignore[arg-type]
    runner.add(regex, RunSettings())  # type: ignore[arg-type]
    await runner.start()
    running = asyncio.ensure_future(runner.run("model", "a"))
    await wait_thread_entered(model)
    queued = asyncio.ensure_future(runner.run("model", "bb"))
    await asyncio.sleep(0)
    try:
        await runner.close()
        results = await asyncio.wait_for(asyncio.gather(running, queued), timeout=10)
    finally:
        model.gate.set()
    assert [r.error for r in results] == ["unavailable", "unavailable"]
    assert (model.closed, regex.closed) == (1, 1)
    assert (await runner.run("regex", "a")).error == "unavailable"
    await runner.close()  # idempotent
    assert regex.closed == 1
    state = runner.state()
    assert state["ready"] is False
    assert state["detectors"]["model"]["closed"] is True


async def test_state_includes_detector_state(runner: DetectorRunner) -> None:
    regex = Recorder("regex")
    await started(runner, (regex, RunSettings()))
    await runner.run("regex", "a")
    lane = runner.state()["detectors"]["regex"]
    assert lane["state"] == {"calls": 1}
    assert lane["kind"] == "Recorder"
    assert lane["blocking"] is False


async def test_built_in_detectors_through_registry_and_runner() -> None:
    from detectors import registry

    runner = DetectorRunner()
    runner.add(registry.create("format", {}))
    runner.add(registry.create("denylist", {"keywords": ["falcon"]}, "codenames"))
    runner.add(registry.create("secrets", None), RunSettings(on_error="fail_closed"))
    await runner.start()
    try:
        token = "gh" + "p_" + "aB3" * 12
        text = f"Falcon launch key {token}"
        context = TextContext(stage="output", response_format={"type": "json_object"})
        outcomes = await runner.run_many(["format", "codenames", "secrets"], text, context)
    finally:
        await runner.close()
    assert [(o.detector, o.error) for o in outcomes] == [
        ("format", None),
        ("codenames", None),
        ("secrets", None),
    ]
    assert [[f.label for f in o.findings] for o in outcomes] == [
        ["json_invalid"],
        ["denylist"],
        ["GITHUB_TOKEN"],
    ]
    assert runner.state()["ready"] is False  # closed


async def test_huge_texts_leave_the_event_loop_for_a_thread() -> None:
    """A non-blocking detector runs a batch over ``offload_chars`` in a worker thread."""

    class Recorder:
        name = "recorder"
        blocking = False

        def __init__(self) -> None:
            self.threads: list[str] = []

        async def start(self) -> None: ...

        async def close(self) -> None: ...

        async def detect(self, texts: Any, contexts: Any = None) -> list[list[Finding]]:
            return self.detect_sync(texts, contexts)

        def detect_sync(self, texts: Any, contexts: Any = None) -> list[list[Finding]]:
            self.threads.append(threading.current_thread().name)
            return [[] for _ in texts]

    rec = Recorder()
    runner = DetectorRunner()
    runner.add(rec, RunSettings(offload_chars=1000))  # type: ignore[arg-type]
    await runner.start()
    await runner.run("recorder", "short", TextContext())
    await runner.run("recorder", "x" * 5000, TextContext())
    await runner.close()
    main = threading.main_thread().name
    assert rec.threads[0] == main and rec.threads[1] != main


async def test_run_segments_batches_queued_detectors_across_texts(runner: DetectorRunner) -> None:
    queued = Recorder("queued")
    regex = Recorder("regex")
    await started(runner, (queued, RunSettings(inline=False)), (regex, RunSettings()))
    sent = texts(3)
    rows = await runner.run_segments(["queued", "regex"], [(t, None) for t in sent])
    assert queued.calls == [sent]  # one batch for the three texts
    assert regex.calls == [[t] for t in sent]  # inline: one call per text
    for text, (from_queued, from_regex) in zip(sent, rows, strict=True):
        assert_answers([from_queued, from_regex], [text, text])


async def test_solo_runs_an_idle_queued_detector_without_a_loop_turn(
    runner: DetectorRunner,
) -> None:
    """``solo`` (no other request in flight): the queued detector is called directly;
    the whole call finishes on its first step, where the queue needs several turns."""
    queued = Recorder("queued")
    await started(runner, (queued, RunSettings(inline=False)))
    call = runner.run_segments(["queued"], [("abc", None)], solo=True)
    with pytest.raises(StopIteration) as done:
        call.send(None)
    (row,) = done.value.value
    assert_answers(row, ["abc"])
    task = asyncio.ensure_future(runner.run_segments(["queued"], [("abcd", None)]))
    await asyncio.sleep(0)  # its first step: submitted, now waiting for the batch
    assert not task.done()
    (row,) = await task
    assert_answers(row, ["abcd"])
    assert queued.calls == [["abc"], ["abcd"]]


async def test_solo_keeps_a_requests_texts_in_one_batch(runner: DetectorRunner) -> None:
    """``solo`` skips waiting for other requests, not batching this request's own
    texts (a chat's messages): one call for all of them, up to ``max_batch``."""
    queued = Recorder("queued")
    await started(runner, (queued, RunSettings(inline=False, max_batch=2)))
    sent = texts(3)
    rows = await runner.run_segments(["queued"], [(t, None) for t in sent], solo=True)
    assert queued.calls == [sent[:2], sent[2:]]
    for text, (outcome,) in zip(sent, rows, strict=True):
        assert_answers([outcome], [text])


async def test_solo_still_queues_behind_a_busy_detector(runner: DetectorRunner) -> None:
    model = Recorder("model", blocking=True)
    await started(runner, (model, RunSettings()))
    model.hold = True
    first = asyncio.ensure_future(runner.run("model", "a"))
    await wait_thread_entered(model)
    second = asyncio.ensure_future(runner.run_segments(["model"], [("bb", None)], solo=True))
    await asyncio.sleep(0.01)
    assert not second.done()  # the lane is busy: solo waits its turn in the queue
    model.gate.set()
    assert_answers([await first], ["a"])
    assert_answers((await second)[0], ["bb"])
    assert model.calls == [["a"], ["bb"]]


async def test_cancelled_run_segments_abandons_every_queued_text(runner: DetectorRunner) -> None:
    model = Recorder("model", blocking=True)
    model.hold = True
    await started(runner, (model, RunSettings(timeout_s=HANG_S)))
    first = asyncio.ensure_future(runner.run("model", "a"))
    await wait_thread_entered(model)  # the lane is busy: the next texts queue
    waiting = asyncio.ensure_future(runner.run_segments(["model"], [("bb", None), ("ccc", None)]))
    await asyncio.sleep(0)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    model.hold = False
    model.gate.set()
    assert (await first).ok
    (row,) = await runner.run_segments(["model"], [("dddd", None)])
    assert_answers(row, ["dddd"])
    assert model.calls == [["a"], ["dddd"]]  # "bb" and "ccc" were never scored

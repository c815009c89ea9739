"""The SDK's public surface: ``@guard``, ``@observe``, ``wrap_openai``, feedback.

``@guard`` runs a policy route's input detectors before the call (masking what the
policy masks, in a copy of the arguments), the attempt engine around it (retry with
a corrective instruction, fall back to other functions, ``then``), and the output
detectors after it (unmasking, masking leaks), and records a trace. Sync functions,
coroutines, generators and async generators are all supported; generators (and
``stream=True`` calls of a wrapped client) are checked in windows as they are
consumed. ``@observe`` records a trace without checking anything and becomes the
parent of the guarded calls made inside it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, TypeVar, cast

from sidecar import semconv
from sidecar.sdk import tracing
from sidecar.sdk.runtime import SdkRuntime, runtime
from sidecar.sdk.shapes import OpenAIShape, Shape, TextGetter, TextShape

if TYPE_CHECKING:  # the engine, the pipeline and aiohttp load on the first call, not here
    from sidecar.context import RequestContext
    from sidecar.sdk.calls import GuardedFunction

F = TypeVar("F", bound=Callable[..., Any])

_loops = threading.local()


def _thread_loop() -> asyncio.AbstractEventLoop:
    """A private event loop for sync callers of this thread (reused, never shared)."""
    loop: asyncio.AbstractEventLoop | None = getattr(_loops, "loop", None)
    if loop is None or loop.is_closed():
        loop = _loops.loop = asyncio.new_event_loop()
    return loop


def run_sync(coro: Any) -> Any:
    """Run a coroutine to the end from sync code (in this thread; on a helper thread when
    this thread already runs an event loop)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return _thread_loop().run_until_complete(coro)
    result: list[Any] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            result.append(_thread_loop().run_until_complete(coro))
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            errors.append(exc)

    import contextvars

    thread = threading.Thread(target=contextvars.copy_context().run, args=(run,))
    thread.start()
    thread.join()
    if errors:
        raise errors[0]
    return result[0]


# --- @guard ---------------------------------------------------------------------------


def guard(
    fn: F | None = None,
    *,
    route: str | None = None,
    input: Sequence[str] | TextGetter | None = None,  # noqa: A002 - the documented name
    output: TextGetter | None = None,
    fallback: Sequence[Callable[..., Any]] = (),
    name: str | None = None,
) -> Any:
    """Guard a function that calls a model. ``route`` names a policy route (default: the
    route matching ``/v1/chat/completions``); ``input`` the arguments holding text (names,
    or a callable taking the arguments; default: every string argument); ``output`` a
    callable reading the result's text (default: the result when it is a string);
    ``fallback`` functions tried in order once the policy's retries are spent. Functions
    whose arguments are the ``openai`` client's (``messages=``/``prompt=``) are read
    as such. Raises :class:`~sidecar.errors.GuardrailViolation`."""

    def decorate(f: F) -> F:
        return cast(F, _wrap(f, LazyFunction(name or f.__qualname__, f, _shape_for(f, input, output),
                                             route, tuple(fallback))))

    return decorate(fn) if fn is not None else decorate


def _shape_for(fn: Callable[..., Any], inputs: Sequence[str] | TextGetter | None,
               output: TextGetter | None) -> Shape:
    if inputs is None and output is None:
        params = inspect.signature(fn).parameters
        if "messages" in params:
            return OpenAIShape(semconv.OP_CHAT)
        if "prompt" in params and "model" in params:
            return OpenAIShape(semconv.OP_TEXT_COMPLETION)
    return TextShape(fn, inputs, output)


class LazyFunction:
    """What ``@guard`` knows at decoration time; the :class:`GuardedFunction` (and with
    it the engine and the pipeline) is built on the first call."""

    def __init__(self, name: str, fn: Callable[..., Any], shape: Shape, route: str | None,
                 fallbacks: tuple[Callable[..., Any], ...], path: str = "/v1/chat/completions"
                 ) -> None:
        self.args = (name, fn, shape, route, fallbacks, path)
        self._built: GuardedFunction | None = None

    def get(self) -> GuardedFunction:
        if self._built is None:
            from sidecar.sdk.calls import GuardedFunction

            name, fn, shape, route, fallbacks, path = self.args
            self._built = GuardedFunction(name, fn, shape, route_name=route, path=path,
                                          fallbacks=fallbacks)
        return self._built


async def _guarded(lazy: LazyFunction, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    from sidecar.sdk.calls import run_guarded

    return await run_guarded(lazy.get(), runtime(), args, kwargs)


def _wrap(fn: Callable[..., Any], lazy: LazyFunction) -> Callable[..., Any]:
    if inspect.isasyncgenfunction(fn):
        @functools.wraps(fn)
        def agen_wrapper(*args: Any, **kwargs: Any) -> AsyncIterator[Any]:
            return astream(lazy, args, kwargs)
        return agen_wrapper
    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def gen_wrapper(*args: Any, **kwargs: Any) -> Iterator[Any]:
            return stream(lazy, args, kwargs)
        return gen_wrapper
    if inspect.iscoroutinefunction(fn):
        @functools.wraps(fn)
        async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
            return await _guarded(lazy, args, kwargs)
        return async_wrapper

    @functools.wraps(fn)
    def sync_wrapper(*args: Any, **kwargs: Any) -> Any:
        return run_sync(_guarded(lazy, args, kwargs))
    return sync_wrapper


def _emit(rt: SdkRuntime, ctx: RequestContext) -> None:
    ctx.ended_at = time.perf_counter()
    if rt.emitter is not None:
        rt.emitter.emit(ctx)


async def _open_stream(gf: GuardedFunction, rt: SdkRuntime, args: tuple[Any, ...],
                       kwargs: dict[str, Any]) -> tuple[Any, Any]:
    """Input stage and the call; (GuardedStream, the function's iterator)."""
    from sidecar.sdk.calls import input_stage
    from sidecar.sdk.streams import GuardedStream

    body = gf.shape.request_body(args, kwargs)
    model = body.get("model") if isinstance(body.get("model"), str) else None
    route = gf.route(rt, model)
    ctx = tracing.new_context(gf.name, gf.shape.op, body)
    ctx.stream = True
    try:
        with tracing.activate(ctx):
            masker, input_decision = await input_stage(gf, rt, ctx, route, args, kwargs, body)
            call_args, call_kwargs = gf.shape.with_body(args, kwargs, body)
            ctx.upstream_attempts = 1
            ctx.upstream_sent_at = time.perf_counter()
            source = gf.fn(*call_args, **call_kwargs)
            if inspect.isawaitable(source):
                source = await source
    except BaseException:
        _emit(rt, ctx)
        raise
    stream = GuardedStream(rt, ctx, route, masker, len(masker) > 0, body, input_decision,
                           on_end=lambda: _emit(rt, ctx))
    return stream, source


def stream(lazy: LazyFunction, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Iterator[Any]:
    """A guarded call whose result is iterated (a generator, a ``stream=True`` call)."""
    from sidecar.sdk.streams import iterate

    guarded, source = run_sync(_open_stream(lazy.get(), runtime(), args, kwargs))
    with tracing.activate(guarded.ctx):
        yield from iterate(guarded, iter(source))


async def astream(lazy: LazyFunction, args: tuple[Any, ...], kwargs: dict[str, Any]
                  ) -> AsyncIterator[Any]:
    """The async form of :func:`stream`."""
    from sidecar.sdk.streams import aiterate

    guarded, source = await _open_stream(lazy.get(), runtime(), args, kwargs)
    async for item in aiterate(guarded, source.__aiter__()):
        yield item


# --- @observe -------------------------------------------------------------------------


def observe(fn: F | None = None, *, name: str | None = None) -> Any:
    """Record a trace around a function (timings; ``usage`` tokens when the result has
    them); checks nothing. Guarded calls inside become its children."""

    def decorate(f: F) -> F:
        label = name or f.__qualname__
        if inspect.iscoroutinefunction(f):
            @functools.wraps(f)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                with _observing(label) as ctx:
                    result = await f(*args, **kwargs)
                    _observed(ctx, result)
                    return result
            return cast(F, async_wrapper)

        @functools.wraps(f)
        def sync_wrapper(*args: Any, **kwargs: Any) -> Any:
            with _observing(label) as ctx:
                result = f(*args, **kwargs)
                _observed(ctx, result)
                return result
        return cast(F, sync_wrapper)

    return decorate(fn) if fn is not None else decorate


@contextlib.contextmanager
def _observing(label: str) -> Iterator[RequestContext]:
    """An observed span: the current call while the body runs; recorded at the end (an
    exception is recorded by its type name, never its message)."""
    rt = runtime()
    ctx = tracing.new_context(label, "sdk", None)
    try:
        with tracing.activate(ctx):
            yield ctx
    except BaseException as exc:
        ctx.fail(500, type(exc).__name__[:64])
        raise
    finally:
        _emit(rt, ctx)


def _observed(ctx: RequestContext, result: Any) -> None:
    ctx.status = 200
    usage = getattr(result, "usage", None)
    for key in ("prompt_tokens", "completion_tokens", "total_tokens"):
        value = getattr(usage, key, None)
        if isinstance(value, int):
            setattr(ctx.usage, key, value)
            ctx.usage.source = "upstream"
    if isinstance(result, str):
        ctx.output_parts = [result]

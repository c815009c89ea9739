"""``wrap_openai``: the official client, guarded and traced with no other code change.

``client.chat.completions.create`` and ``client.completions.create`` (unary and
``stream=True``) of an ``OpenAI`` or ``AsyncOpenAI`` client go through ``@guard``'s
machinery; every other attribute is the client's own, untouched. The policy route
is the one matching the endpoint's path and the call's ``model``.
"""

from __future__ import annotations

import inspect
from typing import Any, TypeVar

from sidecar import semconv
from sidecar.sdk.api import LazyFunction, _guarded, astream, run_sync, stream
from sidecar.sdk.shapes import OpenAIShape

C = TypeVar("C")
_MARK = "_railwatch_wrapped"


def wrap_openai(client: C, *, route: str | None = None) -> C:
    """Guard ``client`` in place and return it (wrapping twice is a no-op)."""
    if getattr(client, _MARK, False):
        return client
    for resource, op, path in (
        (client.chat.completions, semconv.OP_CHAT, "/v1/chat/completions"),  # type: ignore[attr-defined]
        (client.completions, semconv.OP_TEXT_COMPLETION, "/v1/completions"),  # type: ignore[attr-defined]
    ):
        original = resource.create
        name = f"openai.{path.rsplit('/v1/', 1)[1].replace('/', '.')}.create"
        lazy = LazyFunction(name, original, OpenAIShape(op), route, (), path)
        is_async = (inspect.iscoroutinefunction(inspect.unwrap(original))
                    or type(client).__name__.startswith("Async"))
        resource.create = _create(lazy, is_async)
    setattr(client, _MARK, True)
    return client


def _create(lazy: LazyFunction, is_async: bool) -> Any:
    if is_async:
        async def acreate(*args: Any, **kwargs: Any) -> Any:
            if kwargs.get("stream"):
                return astream(lazy, args, kwargs)
            return await _guarded(lazy, args, kwargs)
        return acreate

    def create(*args: Any, **kwargs: Any) -> Any:
        if kwargs.get("stream"):
            return stream(lazy, args, kwargs)
        return run_sync(_guarded(lazy, args, kwargs))
    return create

"""Where the text of a guarded call is: the ``openai`` client's, or any function's.

Both shapes speak OpenAI-shaped bodies and answers to the rest of the SDK, so the
proxy's guard stages (which mask messages in place and rewrite choices) serve
unchanged. Every ``request_body`` is a deep copy: the caller's arguments are never
mutated, and the masked copy is what the function receives.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from sidecar import semconv

class Shape(Protocol):
    """Where a call's text is, and how to put rewritten text back."""

    op: str  # the trace's operation: "chat" | "text_completion" | "sdk"

    def request_body(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        """An OpenAI-shaped request body holding the call's input texts (a copy)."""

    def with_body(self, args: tuple[Any, ...], kwargs: dict[str, Any], body: Mapping[str, Any]
                  ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """The call's arguments with the (masked, corrected) body put back."""

    def answer_doc(self, result: Any) -> dict[str, Any] | None:
        """An OpenAI-shaped answer holding the result's output text; None: no text."""

    def with_answer(self, result: Any, doc: Mapping[str, Any]) -> Any:
        """The result rewritten from ``doc``; raises TypeError when it cannot be."""


# the request fields the guard stages read, beyond the text itself
_REQUEST_KEYS = ("model", "response_format", "tools", "user", "temperature", "top_p",
                 "max_tokens", "max_completion_tokens", "n", "stream")


class OpenAIShape:
    """``client.chat.completions.create(**kwargs)`` and ``client.completions.create``:
    the keyword arguments are the request body; the result a pydantic model."""

    def __init__(self, op: str) -> None:
        self.op = op
        self._text_key = "messages" if op == semconv.OP_CHAT else "prompt"

    def request_body(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        body = {k: kwargs[k] for k in _REQUEST_KEYS if k in kwargs}
        text = kwargs.get(self._text_key)
        if text is not None:
            body[self._text_key] = copy.deepcopy(list(text) if isinstance(text, tuple) else text)
        return body

    def with_body(self, args: tuple[Any, ...], kwargs: dict[str, Any], body: Mapping[str, Any]
                  ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        out = dict(kwargs)
        for key in (self._text_key, "model"):
            if key in body:
                out[key] = body[key]
        return args, out

    def answer_doc(self, result: Any) -> dict[str, Any] | None:
        to_dict = getattr(result, "to_dict", None)
        if callable(to_dict):
            doc = to_dict()
            return doc if isinstance(doc, dict) else None
        return result if isinstance(result, dict) else None

    def with_answer(self, result: Any, doc: Mapping[str, Any]) -> Any:
        validate = getattr(type(result), "model_validate", None)
        if isinstance(result, dict):
            return dict(doc)
        if validate is None:
            raise TypeError("the result cannot be rebuilt")
        return validate(dict(doc))


TextGetter = Callable[..., Any]


class TextShape:
    """Any function. ``inputs`` names the arguments that hold text (strings, or lists of
    strings), or is a callable taking the arguments and returning the texts (read only);
    ``output`` reads the text of the result (default: the result when it is a string).
    Input texts are put back masked when they are named arguments; the result is
    rewritten when it is a string."""

    op = "sdk"

    def __init__(self, fn: Callable[..., Any], inputs: Sequence[str] | TextGetter | None,
                 output: TextGetter | None) -> None:
        self.signature = inspect.signature(fn)
        self.inputs = inputs
        self.output = output

    def _bound(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> inspect.BoundArguments:
        bound = self.signature.bind_partial(*args, **kwargs)
        return bound

    def _texts(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[tuple[str | None, int | None, str]]:
        """(argument name or None, index in a list or None, text)."""
        if callable(self.inputs):
            found = self.inputs(*args, **kwargs)
            texts = [found] if isinstance(found, str) else list(found or ())
            return [(None, None, t) for t in texts if isinstance(t, str)]
        bound = self._bound(args, kwargs)
        names = self.inputs if self.inputs is not None else [
            n for n, v in bound.arguments.items() if isinstance(v, str)]
        out: list[tuple[str | None, int | None, str]] = []
        for name in names:
            value = bound.arguments.get(name)
            if isinstance(value, str):
                out.append((name, None, value))
            elif isinstance(value, (list, tuple)):
                out.extend((name, i, v) for i, v in enumerate(value) if isinstance(v, str))
        return out

    def request_body(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        # the embeddings shape ("input": [texts]): the guard reads and masks it item by item
        texts = self._texts(args, kwargs)
        return {"input": [t for _n, _i, t in texts], "_places": [(n, i) for n, i, _t in texts],
                "_originals": [t for _n, _i, t in texts]}

    def with_body(self, args: tuple[Any, ...], kwargs: dict[str, Any], body: Mapping[str, Any]
                  ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        places = body.get("_places") or []
        texts = body.get("input") or []
        originals = body.get("_originals") or []
        changes = [(place, text) for place, text, original
                   in zip(places, texts, originals, strict=False) if text != original]
        if any(name is None for (name, _i), _t in changes):
            # a rewritten text that came from a callable cannot be put back: the function
            # would receive the raw value the policy masks
            raise TypeError("masked input cannot be put back into the call")
        if not changes:
            return args, kwargs
        bound = self._bound(args, kwargs)
        for (name, index), text in changes:
            if name is None or not isinstance(text, str):
                continue
            if index is None:
                bound.arguments[name] = text
            else:
                value = list(bound.arguments[name])
                value[index] = text
                bound.arguments[name] = value
        return tuple(bound.args), dict(bound.kwargs)

    def answer_doc(self, result: Any) -> dict[str, Any] | None:
        text = self.output(result) if self.output is not None else result
        if not isinstance(text, str):
            return None
        return {"choices": [{"index": 0, "text": text}]}

    def with_answer(self, result: Any, doc: Mapping[str, Any]) -> Any:
        if not isinstance(result, str):
            raise TypeError("only a string result can be rewritten")
        return doc["choices"][0]["text"]

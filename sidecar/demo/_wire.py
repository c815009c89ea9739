"""The OpenAI wire format as the demo upstream speaks it: request options in, bodies out.

Reading: :func:`read_options`, :func:`pick_tool`, :func:`messages_text` validate the
parts of a request body the demo acts on (unknown fields are ignored) and raise
:class:`BadRequest` with a client-safe message. Writing: :func:`render` makes one
choice's answer; :func:`chat_body` / :func:`completion_body` build non-streaming bodies
and :func:`chat_events` / :func:`completion_events` the SSE events, in the exact shape of
OpenAI's ``chat.completion.chunk`` and ``text_completion`` streams (role delta first,
content pieces, a ``finish_reason`` chunk per choice, then, with
``stream_options.include_usage``, a ``choices: []`` chunk carrying ``usage``; the
caller appends ``data: [DONE]``). :func:`embedding_vector` hashes text to a unit vector.

Pure, non-blocking functions over plain dicts; orjson does the encoding.
"""

from __future__ import annotations

import base64
import hashlib
import math
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson

from ._schema import example_for_schema
from ._script import broken_json, count_tokens, truncate_tokens

__all__ = [
    "BadRequest",
    "Options",
    "Output",
    "chat_body",
    "chat_events",
    "completion_body",
    "completion_events",
    "embedding_vector",
    "messages_text",
    "pick_tool",
    "read_options",
    "render",
]

MAX_N = 128


class BadRequest(Exception):
    """A request the demo refuses with 400 (``invalid_request_error``)."""

    def __init__(self, message: str, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code


@dataclass(slots=True, frozen=True)
class Options:
    """The generation options of one chat or text completion request."""

    n: int
    stream: bool
    include_usage: bool
    max_tokens: int | None
    json_mode: str | None  # None | "json_object" | "json_schema"
    schema: Any


@dataclass(slots=True, frozen=True)
class Output:
    """One choice's answer: text ``content``, or one function call (``tool_name``)."""

    content: str | None
    tool_name: str | None
    arguments: str | None
    finish_reason: str
    tokens: int


def read_options(body: dict[str, Any]) -> Options:
    """Validate ``n``, ``stream``, ``stream_options``, max tokens and ``response_format``."""
    n = body.get("n")
    n = 1 if n is None else n
    if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= MAX_N:
        raise BadRequest(f"'n' must be an integer between 1 and {MAX_N}.", "n")
    stream = body.get("stream") is True
    stream_options = body.get("stream_options")
    include_usage = (
        stream and isinstance(stream_options, dict) and stream_options.get("include_usage") is True
    )
    key = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
    max_tokens = body.get(key)
    if max_tokens is not None and (
        not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1
    ):
        raise BadRequest(f"'{key}' must be a positive integer.", key)
    json_mode: str | None = None
    schema: Any = None
    fmt = body.get("response_format")
    if fmt is not None:
        kind = fmt.get("type") if isinstance(fmt, dict) else None
        if kind == "json_schema":
            spec = fmt.get("json_schema")
            if not isinstance(spec, dict):
                raise BadRequest("'response_format.json_schema' must be an object.",
                                 "response_format.json_schema")
            schema = spec.get("schema", {})
        elif kind not in ("text", "json_object"):
            raise BadRequest("'response_format.type' must be 'text', 'json_object' or "
                             "'json_schema'.", "response_format.type")
        json_mode = None if kind == "text" else kind
    return Options(n, stream, include_usage, max_tokens, json_mode, schema)


def pick_tool(body: dict[str, Any]) -> tuple[str, Any] | None:
    """The function to call, ``(name, parameters schema)``, or ``None`` to answer text.

    The first function of ``tools``, or the one ``tool_choice`` forces; none when
    there are no tools or ``tool_choice`` is ``"none"``.
    """
    tools = body.get("tools")
    choice = body.get("tool_choice")
    if not tools or choice == "none":
        return None
    if not isinstance(tools, list):
        raise BadRequest("'tools' must be an array.", "tools")
    functions: list[tuple[str, Any]] = []
    for tool in tools:
        fn = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            raise BadRequest("Each tool must be {'type': 'function', 'function': {'name': ...}}.",
                             "tools")
        functions.append((fn["name"], fn.get("parameters", {})))
    if isinstance(choice, dict):
        fn = choice.get("function")
        wanted = fn.get("name") if isinstance(fn, dict) else None
        for name, params in functions:
            if name == wanted:
                return name, params
        raise BadRequest(f"'tool_choice' names a function not in 'tools': {wanted!r}.",
                         "tool_choice")
    return functions[0]


def messages_text(messages: list[Any]) -> tuple[str, str, bool]:
    """``(all message text, last user message text, last message is a tool result)``."""
    texts: list[str] = []
    last_user = ""
    for message in messages:
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise BadRequest("Each message must be an object with a 'role'.", "messages")
        text = content_text(message.get("content"))
        texts.append(text)
        if message["role"] == "user":
            last_user = text
    return "\n".join(texts), last_user, messages[-1].get("role") == "tool"


def content_text(content: Any) -> str:
    """The text of a message ``content``: a string, or the text parts of a part list."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            part["text"] for part in content
            if isinstance(part, dict) and isinstance(part.get("text"), str)
        )
    return ""


def render(text: str, tool: tuple[str, Any] | None, opts: Options, invalid_json: bool) -> Output:
    """One choice's answer to ``text`` under the request's tool and format options."""
    if tool is not None:
        arguments = orjson.dumps(example_for_schema(tool[1], text)).decode()
        if invalid_json:
            arguments = broken_json(arguments)
        return Output(None, tool[0], arguments, "tool_calls", count_tokens(arguments) + 1)
    if opts.json_mode == "json_schema":
        content = orjson.dumps(example_for_schema(opts.schema, text)).decode()
    elif opts.json_mode == "json_object" or invalid_json:
        content = orjson.dumps({"echo": text, "ok": True}).decode()
    else:
        content = text
    if invalid_json:
        content = broken_json(content)
    finish = "stop"
    if opts.max_tokens is not None:
        cut = truncate_tokens(content, opts.max_tokens)
        if cut is not None:
            content, finish = cut, "length"
    return Output(content, None, None, finish, count_tokens(content))


def usage(prompt_tokens: int, outputs: list[Output]) -> dict[str, int]:
    completion = sum(out.tokens for out in outputs)
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion,
        "total_tokens": prompt_tokens + completion,
    }


def _message(out: Output, call_id: str) -> dict[str, Any]:
    if out.tool_name is None:
        return {"role": "assistant", "content": out.content, "refusal": None}
    return {
        "role": "assistant",
        "content": None,
        "refusal": None,
        "tool_calls": [{
            "id": call_id,
            "type": "function",
            "function": {"name": out.tool_name, "arguments": out.arguments},
        }],
    }


def chat_body(head: dict[str, Any], outputs: list[Output], use: dict[str, int]) -> bytes:
    """A ``chat.completion`` body; ``head`` holds id, created, model, fingerprint."""
    choices = [
        {
            "index": i,
            "message": _message(out, f"call_{head['id']}_{i}"),
            "logprobs": None,
            "finish_reason": out.finish_reason,
        }
        for i, out in enumerate(outputs)
    ]
    return orjson.dumps({"object": "chat.completion", **head, "choices": choices, "usage": use})


def completion_body(head: dict[str, Any], outputs: list[Output], use: dict[str, int]) -> bytes:
    """A ``text_completion`` body."""
    choices = [
        {"text": out.content, "index": i, "logprobs": None, "finish_reason": out.finish_reason}
        for i, out in enumerate(outputs)
    ]
    return orjson.dumps({"object": "text_completion", **head, "choices": choices, "usage": use})


def pieces(out: Output, size: int) -> list[str]:
    """The streamed pieces of an answer: ``size`` characters each."""
    text = out.arguments if out.tool_name is not None else out.content
    text = text or ""
    return [text[i : i + size] for i in range(0, len(text), size)]


def _event(obj: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


def chat_events(
    head: dict[str, Any],
    outputs: list[Output],
    parts: list[list[str]],
    use: dict[str, int] | None,
) -> Iterator[bytes]:
    """The SSE events of a streamed chat completion (``use``: usage chunk or none).

    Choices are interleaved piece by piece, one choice per chunk, as OpenAI does.
    """
    base = {"object": "chat.completion.chunk", **head}
    if use is not None:
        base["usage"] = None  # include_usage: every chunk carries "usage": null

    def chunk(index: int, delta: dict[str, Any], finish: str | None = None) -> bytes:
        choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}
        return _event({**base, "choices": [choice]})

    for i, out in enumerate(outputs):
        if out.tool_name is None:
            yield chunk(i, {"role": "assistant", "content": "", "refusal": None})
        else:
            call = {"index": 0, "id": f"call_{head['id']}_{i}", "type": "function",
                    "function": {"name": out.tool_name, "arguments": ""}}
            yield chunk(i, {"role": "assistant", "content": None, "refusal": None,
                            "tool_calls": [call]})
    for step in range(max((len(p) for p in parts), default=0)):
        for i, out in enumerate(outputs):
            if step < len(parts[i]):
                piece = parts[i][step]
                if out.tool_name is None:
                    yield chunk(i, {"content": piece})
                else:
                    yield chunk(i, {"tool_calls": [{"index": 0, "function": {"arguments": piece}}]})
    for i, out in enumerate(outputs):
        yield chunk(i, {}, out.finish_reason)
    if use is not None:
        yield _event({**base, "choices": [], "usage": use})


def completion_events(
    head: dict[str, Any],
    outputs: list[Output],
    parts: list[list[str]],
    use: dict[str, int] | None,
) -> Iterator[bytes]:
    """The SSE events of a streamed text completion."""
    base = {"object": "text_completion", **head}
    if use is not None:
        base["usage"] = None

    def chunk(index: int, text: str, finish: str | None = None) -> bytes:
        choice = {"text": text, "index": index, "logprobs": None, "finish_reason": finish}
        return _event({**base, "choices": [choice]})

    for step in range(max((len(p) for p in parts), default=0)):
        for i in range(len(outputs)):
            if step < len(parts[i]):
                yield chunk(i, parts[i][step])
    for i, out in enumerate(outputs):
        yield chunk(i, "", out.finish_reason)
    if use is not None:
        yield _event({**base, "choices": [], "usage": use})


def embedding_vector(text: str, dims: int, as_base64: bool) -> list[float] | str:
    """A unit-length vector of ``dims`` floats that depends only on ``text``.

    SHAKE-128 of the UTF-8 text, read as little-endian int16 values, normalised. The
    base64 form is little-endian float32, as OpenAI's ``encoding_format="base64"``.
    """
    raw = struct.unpack(f"<{dims}h", hashlib.shake_128(text.encode()).digest(2 * dims))
    norm = math.sqrt(sum(v * v for v in raw)) or 1.0
    vector = [v / norm for v in raw]
    if as_base64:
        return base64.b64encode(struct.pack(f"<{dims}f", *vector)).decode()
    return vector

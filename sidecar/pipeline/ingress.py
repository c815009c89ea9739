"""Ingress stage: read the body within limits, parse it, check field types, fill the context.

Only the fields railwatch itself relies on are checked; every other field is kept
and forwarded untouched (the upstream judges them). Checks are hand-written
rather than a pydantic model because they run on every request and cost a few
microseconds this way. Raises :class:`BadRequestError` (400) or
:class:`PayloadTooLargeError` (413) or :class:`RequestTimeoutError` (408) with a public
message that never quotes the body.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from typing import Any

import orjson
from aiohttp import web
from aiohttp.web_protocol import RequestPayloadError

from sidecar import semconv
from sidecar.context import RequestContext
from sidecar.drift.facts import chat_facts
from sidecar.errors import BadRequestError, PayloadTooLargeError, RequestTimeoutError


GUARDED_PATHS = {  # path -> operation, the routes with guardrails
    "/v1/chat/completions": semconv.OP_CHAT,
    "/v1/completions": semconv.OP_TEXT_COMPLETION,
    "/v1/embeddings": semconv.OP_EMBEDDINGS,
}
_SLASHES = re.compile(r"/{2,}")


def canonical_path(path: str) -> str:
    """Repeated slashes merged, a trailing slash dropped, lower case: how servers that
    normalise paths would read it (so variants cannot dodge a guarded route)."""
    if path in GUARDED_PATHS:
        return path
    path = _SLASHES.sub("/", path).lower()
    return path[:-1] if len(path) > 1 and path.endswith("/") else path


MAX_MODEL_CHARS = 256  # model names key caches and labels: bounded


BODY_TIMEOUT: web.AppKey[float] = web.AppKey("railwatch_body_timeout_s", float)
"""The app's ``server.body_timeout_s``, set by ``create_app``."""
_BODY: web.RequestKey[bytes] = web.RequestKey("railwatch_body", bytes)  # the body once read


async def read_body(request: web.Request, max_bytes: int) -> bytes:
    """The whole request body: 413 once it exceeds ``max_bytes``, 408 when it did not
    arrive within the app's ``server.body_timeout_s``. Waits on the client, never longer.

    The body is kept on the request, so a second call (the envelope reads it before a
    request counts as in flight; the route reads it again) costs nothing.
    """
    cached: bytes | None = request.get(_BODY)
    if cached is None:
        cached = request[_BODY] = await _read(request, max_bytes)
    if len(cached) > max_bytes:
        raise PayloadTooLargeError(f"request body exceeds the limit of {max_bytes} bytes")
    return cached


async def _read(request: web.Request, max_bytes: int) -> bytes:
    length = request.content_length
    if length is not None and length > max_bytes:
        raise PayloadTooLargeError(f"request body exceeds the limit of {max_bytes} bytes")
    timeout_s = request.app.get(BODY_TIMEOUT)
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(timeout_s):
            async for chunk in request.content.iter_any():
                size += len(chunk)
                if size > max_bytes:
                    raise PayloadTooLargeError(
                        f"request body exceeds the limit of {max_bytes} bytes"
                    )
                chunks.append(chunk)
    except RequestPayloadError:  # a body that does not decode as its Content-Encoding says
        raise BadRequestError(
            "request body does not match its Content-Encoding", code="invalid_encoding"
        ) from None
    except TimeoutError:
        raise RequestTimeoutError(
            f"the request body did not arrive within {timeout_s:g} s"
        ) from None
    return b"".join(chunks) if len(chunks) != 1 else chunks[0]


def parse_json_object(raw: bytes) -> dict[str, Any]:
    if not raw:
        raise BadRequestError("request body is empty; expected a JSON object", code="empty_body")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError:
            raise BadRequestError(
                "request body is not valid UTF-8", code="invalid_encoding"
            ) from None
        raise BadRequestError("request body is not valid JSON", code="invalid_json") from None
    if not isinstance(body, dict):
        raise BadRequestError("request body must be a JSON object", code="invalid_json")
    return body


# --- field checks ---------------------------------------------------------------------------


def _type_error(param: str, expected: str) -> BadRequestError:
    return BadRequestError(f"'{param}' must be {expected}", param=param, code="invalid_type")


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _opt(body: dict[str, Any], key: str, check: Callable[[Any], bool], expected: str) -> Any:
    value = body.get(key)
    if value is not None and not check(value):
        raise _type_error(key, expected)
    return value


def _check_common(body: dict[str, Any], ctx: RequestContext) -> None:
    model = _opt(body, "model", lambda v: isinstance(v, str), "a string")
    stream = _opt(body, "stream", lambda v: isinstance(v, bool), "a boolean")
    _opt(body, "stream_options", lambda v: isinstance(v, dict), "an object")
    ctx.temperature = _opt(body, "temperature", _is_number, "a number")
    ctx.top_p = _opt(body, "top_p", _is_number, "a number")
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    if max_tokens is not None and not _is_int(max_tokens):
        raise _type_error("max_tokens", "an integer")
    n = _opt(body, "n", lambda v: _is_int(v) and v >= 1, "an integer of at least 1")
    user = _opt(body, "user", lambda v: isinstance(v, str), "a string")
    if model is not None and len(model) > MAX_MODEL_CHARS:
        raise BadRequestError(f"'model' is longer than {MAX_MODEL_CHARS} characters",
                              param="model", code="invalid_value")
    ctx.model_requested = model
    ctx.stream = bool(stream)
    ctx.max_tokens = max_tokens
    ctx.n = n
    ctx.user = user


def _content_text(content: Any, param: str) -> str:
    """Text of a message ``content``: a string, null, or a list of content parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for i, part in enumerate(content):
            if not isinstance(part, dict):
                raise _type_error(f"{param}[{i}]", "an object")
            text = part.get("text")
            if text is not None:
                if not isinstance(text, str):
                    raise _type_error(f"{param}[{i}].text", "a string")
                texts.append(text)
        return "\n".join(texts)
    raise _type_error(param, "a string, an array of content parts, or null")


def check_chat(body: dict[str, Any], ctx: RequestContext) -> None:
    _check_common(body, ctx)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequestError(
            "'messages' must be a non-empty array", param="messages", code="invalid_type"
        )
    parts: list[str] = []
    roles: list[str] = []
    system: list[str] = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise _type_error(f"messages[{i}]", "an object")
        role = message.get("role")
        if not isinstance(role, str):
            raise _type_error(f"messages[{i}].role", "a string")
        text = _content_text(message.get("content"), f"messages[{i}].content")
        parts.append(f"{role}: {text}")
        roles.append(role)
        if role in ("system", "developer"):
            system.append(text)
    tools = _opt(body, "tools", lambda v: isinstance(v, list), "an array")
    _opt(body, "response_format", lambda v: isinstance(v, dict), "an object")
    ctx.prompt_text = "\n".join(parts)
    ctx.attributes.update(chat_facts(roles, system, bool(tools)))  # for drift, no text


def check_completion(body: dict[str, Any], ctx: RequestContext) -> None:
    _check_common(body, ctx)
    prompt = body.get("prompt")
    if isinstance(prompt, str):
        ctx.prompt_text = prompt
    elif isinstance(prompt, list) and all(isinstance(p, str) for p in prompt):
        ctx.prompt_text = "\n".join(prompt)
    elif isinstance(prompt, list) and all(
        _is_int(p) or (isinstance(p, list) and all(_is_int(t) for t in p)) for p in prompt
    ):
        ctx.prompt_text = None  # token ids: nothing to read
    else:
        raise _type_error("prompt", "a string, an array of strings, or an array of token ids")


def check_embeddings(body: dict[str, Any], ctx: RequestContext) -> None:
    model = _opt(body, "model", lambda v: isinstance(v, str), "a string")
    _opt(body, "user", lambda v: isinstance(v, str), "a string")
    if model is not None and len(model) > MAX_MODEL_CHARS:
        raise BadRequestError(f"'model' is longer than {MAX_MODEL_CHARS} characters",
                              param="model", code="invalid_value")
    ctx.model_requested = model
    ctx.user = body.get("user")
    inp = body.get("input")
    if isinstance(inp, str):
        ctx.prompt_text = inp
    elif isinstance(inp, list) and inp and all(isinstance(p, str) for p in inp):
        ctx.prompt_text = "\n".join(inp)
    elif isinstance(inp, list) and inp and all(
        _is_int(p) or (isinstance(p, list) and all(_is_int(t) for t in p)) for p in inp
    ):
        ctx.prompt_text = None
    else:
        raise _type_error("input", "a string, an array of strings, or an array of token ids")


CHECKS: dict[str, Callable[[dict[str, Any], RequestContext], None]] = {
    semconv.OP_CHAT: check_chat,
    semconv.OP_TEXT_COMPLETION: check_completion,
    semconv.OP_EMBEDDINGS: check_embeddings,
}


async def parse_request(
    request: web.Request, ctx: RequestContext, max_bytes: int
) -> tuple[bytes, dict[str, Any]]:
    """Read, parse and check an OpenAI request for ``ctx.route``; returns (raw, body)."""
    raw = await read_body(request, max_bytes)
    body = parse_json_object(raw)
    CHECKS[ctx.route](body, ctx)
    ctx.body = body
    return raw, body

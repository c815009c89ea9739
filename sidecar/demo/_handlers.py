"""Request handling of the demo upstream: per-app state, route handlers, scripts.

:class:`DemoState` holds one application's options, its bounded request log and its
bounded per-prompt counters (for ``fail_times`` / ``invalid_json_times``);
:class:`Handlers` answers the routes that :func:`sidecar.demo.upstream.create_app`
wires. Errors reach clients in OpenAI's shape ``{"error": {"message", "type",
"param", "code"}}``. Scripted hang-ups close the transport and let aiohttp drop the
rest of the response quietly.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import time
from collections import OrderedDict, deque
from collections.abc import Iterable, Iterator
from typing import Any

import orjson
from aiohttp import web

from ._script import (
    BEHAVIOUR_KEYS,
    BENIGN_FILLER,
    PII_SENTENCE,
    TOXIC_SENTENCE,
    DirectiveError,
    Script,
    count_tokens,
    pad_words,
    parse_directives,
)
from ._wire import (
    BadRequest,
    Options,
    Output,
    chat_body,
    chat_events,
    completion_body,
    completion_events,
    embedding_vector,
    messages_text,
    pick_tool,
    pieces,
    read_options,
    render,
    usage,
)

__all__ = ["STATE_KEY", "DemoState", "Handlers"]

_COUNTER_LIMIT = 4096  # prompts remembered for fail_times / invalid_json_times
_MAX_DIMS = 4096
_SSE_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
_DONE = b"data: [DONE]\n\n"
_ERROR_TYPES = {401: "authentication_error", 403: "permission_error", 404: "not_found_error",
                429: "rate_limit_error"}


def _error(status: int, message: str, *, param: str | None = None, code: str | None = None,
           headers: dict[str, str] | None = None) -> web.Response:
    """A response in OpenAI's error shape."""
    kind = _ERROR_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    body = {"error": {"message": message, "type": kind, "param": param, "code": code}}
    return web.Response(status=status, body=orjson.dumps(body), headers=headers,
                        content_type="application/json")


def _json(obj: Any) -> web.Response:
    return web.Response(body=orjson.dumps(obj), content_type="application/json")


def _close_connection(request: web.BaseRequest) -> None:
    """Close the client connection now (buffered bytes are flushed first).

    aiohttp then fails to write the rest of the response with a ``ConnectionError``,
    which it swallows quietly: exactly the "peer vanished" that scripts ask for.
    """
    transport = request.transport
    if transport is not None:
        transport.close()


# Headers that carry credentials: the demo records that they came, never their values.
_CREDENTIAL_HEADERS = frozenset({
    "authorization", "proxy-authorization", "cookie", "set-cookie", "x-api-key", "api-key",
})


def redacted(value: str) -> str:
    """What the demo keeps of a credential: a 12-hex SHA-256 prefix, enough for a test to
    check that the value it sent arrived, useless to anyone reading the log."""
    digest = hashlib.sha256(value.encode("utf-8", "surrogateescape")).hexdigest()[:12]
    return f"[redacted sha256:{digest}]"


def redact_headers(items: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Request headers, lower-cased, with every credential value :func:`redacted`."""
    return {
        name.lower(): redacted(value) if name.lower() in _CREDENTIAL_HEADERS else value
        for name, value in items
    }


class DemoState:
    """Per-application state: options, the request log and the per-prompt counters."""

    def __init__(self, *, chunk_delay_ms: float, default_chunk_chars: int, served_model: str,
                 system_fingerprint: str, request_log_size: int,
                 model_card: dict[str, Any]) -> None:
        if chunk_delay_ms < 0 or default_chunk_chars < 1 or request_log_size < 0:
            raise ValueError("chunk_delay_ms >= 0, default_chunk_chars >= 1 and "
                             "request_log_size >= 0 are required")
        self.chunk_delay_s = chunk_delay_ms / 1000.0
        self.chunk_chars = default_chunk_chars
        self.model = served_model
        self.fingerprint = system_fingerprint
        self.log: deque[dict[str, Any]] = deque(maxlen=request_log_size)
        self.seen = 0
        self.counters: OrderedDict[tuple[str, str], int] = OrderedDict()
        self.ids = itertools.count(1)
        self.model_card = model_card
        self.pad_words = 0  # PUT /_demo/behaviour: appended to every answer
        self.suffix = ""

    def record(self, request: web.BaseRequest, body: Any) -> None:
        self.seen += 1
        self.log.append({
            "seq": self.seen,
            "time": time.time(),
            "method": request.method,
            "path": request.path,
            "query": request.query_string,
            "headers": redact_headers(request.headers.items()),
            "body": body,
        })

    def bump(self, kind: str, key: str) -> int:
        """Count one more sighting of ``key`` for ``kind``; return the new count."""
        count = self.counters.pop((kind, key), 0) + 1
        self.counters[(kind, key)] = count
        if len(self.counters) > _COUNTER_LIMIT:
            self.counters.popitem(last=False)
        return count

    def head(self, prefix: str, script: Script | None = None) -> dict[str, Any]:
        fingerprint = self.fingerprint
        if script is not None and script.fingerprint is not None:
            fingerprint = script.fingerprint
        return {"id": f"{prefix}-demo-{next(self.ids)}", "created": int(time.time()),
                "model": self.model, "system_fingerprint": fingerprint}

    def shaped(self, text: str, script: Script | None) -> str:
        """The answer after the state-wide and per-request length/suffix behaviour."""
        words = self.pad_words + (script.pad_words if script is not None else 0)
        text = pad_words(text, words)
        return f"{text}{self.suffix}" if self.suffix else text

    def behaviour(self) -> dict[str, Any]:
        return {"served_model": self.model, "system_fingerprint": self.fingerprint,
                "pad_words": self.pad_words, "suffix": self.suffix}

    def set_behaviour(self, body: dict[str, Any]) -> None:
        """Apply ``PUT /_demo/behaviour``; raises BadRequest naming a bad key."""
        for key, value in body.items():
            if key not in BEHAVIOUR_KEYS:
                raise BadRequest(f"Unknown behaviour key {key!r}; known: "
                                 f"{', '.join(sorted(BEHAVIOUR_KEYS))}.", key)
            if key == "pad_words":
                if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 100_000:
                    raise BadRequest("'pad_words' must be an integer in [0, 100000].", key)
                self.pad_words = value
            elif not isinstance(value, str) or len(value) > 4096:
                raise BadRequest(f"{key!r} must be a string of at most 4096 characters.", key)
            elif key == "served_model":
                self.model = value
            elif key == "system_fingerprint":
                self.fingerprint = value
            else:
                self.suffix = value


STATE_KEY = web.AppKey("railwatch_demo_state", DemoState)


class Handlers:
    """The route handlers; each may sleep (scripted delays) but never blocks the loop."""

    def __init__(self, state: DemoState) -> None:
        self._state = state

    async def _body(self, request: web.Request) -> dict[str, Any]:
        """Read, record and parse the JSON body; raises :class:`BadRequest`."""
        raw = await request.read()
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            self._state.record(request, raw.decode("utf-8", "replace"))
            raise BadRequest("We could not parse the JSON body of your request.") from None
        self._state.record(request, body)
        if not isinstance(body, dict):
            raise BadRequest("The request body must be a JSON object.")
        return body

    async def _prelude(self, request: web.Request, script: Script | None,
                       key: str) -> web.StreamResponse | None:
        """Apply slow / drop / status / fail_times; a response means: answer that."""
        if script is None:
            return None
        if script.slow_s:
            await asyncio.sleep(script.slow_s)
        if script.drop:
            _close_connection(request)
            return web.Response(status=500)  # never reaches the client
        failing = script.status is not None
        if script.fail_times:
            failing = self._state.bump("fail", key) <= script.fail_times
        if not failing:
            return None
        status = script.status or 500
        headers = None
        if script.retry_after is not None or status in (429, 503):
            headers = {"Retry-After": str(script.retry_after if script.retry_after is not None
                                          else 1)}
        return _error(status, f"Scripted failure of the railwatch demo upstream (HTTP {status}).",
                      code="rate_limit_exceeded" if status == 429 else "demo_scripted_failure",
                      headers=headers)

    def _invalid_json(self, script: Script | None, key: str) -> bool:
        if script is None:
            return False
        if script.invalid_json_times:
            return self._state.bump("invalid_json", key) <= script.invalid_json_times
        return script.invalid_json

    async def _send(self, request: web.Request, payload: bytes,
                    script: Script | None) -> web.StreamResponse:
        if script is None or not script.break_:
            return web.Response(body=payload, content_type="application/json")
        # Promise the whole body, send half of it, hang up.
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        resp.content_length = len(payload)
        with contextlib.suppress(ConnectionError):
            await resp.prepare(request)
            await resp.write(payload[: len(payload) // 2])
        _close_connection(request)
        return resp

    async def _stream(self, request: web.Request, events: Iterator[bytes],
                      script: Script | None, break_after: int) -> web.StreamResponse:
        """Write the events as SSE, then ``[DONE]``; or hang up after ``break_after``."""
        pace = self._state.chunk_delay_s
        if script is not None and script.pace_ms is not None:
            pace = script.pace_ms / 1000.0
        limit = break_after if script is not None and script.break_ else -1
        resp = web.StreamResponse(headers=_SSE_HEADERS)
        try:
            await resp.prepare(request)
            for written, event in enumerate(events):
                if written == limit:
                    _close_connection(request)
                    return resp
                if written and pace:
                    await asyncio.sleep(pace)
                await resp.write(event)
            await resp.write(_DONE)
            await resp.write_eof()
        except ConnectionError:  # the client went away; nothing left to tell it
            pass
        return resp

    async def _generate(self, request: web.Request, kind: str, answers: list[str], key: str,
                        script: Script | None, prompt_tokens: int,
                        tool: tuple[str, Any] | None, opts: Options) -> web.StreamResponse:
        """The shared tail of chat and text completions, after validation."""
        early = await self._prelude(request, script, key)
        if early is not None:
            return early
        invalid = self._invalid_json(script, key)
        outputs: list[Output] = []
        for answer in answers:
            for k in range(opts.n):
                text = answer if k == 0 else f"{answer} (choice {k + 1})"
                outputs.append(render(text, tool, opts, invalid))
        use = usage(prompt_tokens, outputs)
        chat = kind == "chat"
        head = self._state.head("chatcmpl" if chat else "cmpl", script)
        if not opts.stream:
            payload = (chat_body if chat else completion_body)(head, outputs, use)
            return await self._send(request, payload, script)
        size = self._state.chunk_chars
        if script is not None and script.chunk_chars is not None:
            size = script.chunk_chars
        parts = [pieces(out, size) for out in outputs]
        n_pieces = sum(len(p) for p in parts)
        lead = len(outputs) if chat else 0  # role chunks
        events = (chat_events if chat else completion_events)(
            head, outputs, parts, use if opts.include_usage else None)
        half = min(n_pieces, max(1, n_pieces // 2))  # at least one piece, never the end
        return await self._stream(request, events, script, lead + half)

    async def chat(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await self._body(request)
            messages = body.get("messages")
            if not isinstance(messages, list) or not messages:
                raise BadRequest("'messages' must be a non-empty array.", "messages")
            prompt, last_user, after_tool = messages_text(messages)
            answer, script = _directives(last_user, "messages")
            opts = read_options(body)
            tool = None if after_tool else pick_tool(body)
        except BadRequest as exc:
            return _error(400, exc.message, param=exc.param, code=exc.code)
        answer = self._state.shaped(_answer_text(answer, script), script)
        return await self._generate(request, "chat", [answer], last_user, script,
                                    count_tokens(prompt), tool, opts)

    async def completions(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await self._body(request)
            prompt = body.get("prompt")
            prompts = [prompt] if isinstance(prompt, str) else prompt
            if not isinstance(prompts, list) or not prompts or not all(
                isinstance(p, str) for p in prompts
            ):
                raise BadRequest("'prompt' must be a string or a non-empty array of strings.",
                                 "prompt")
            script: Script | None = None
            answers = []
            for text in prompts:
                answer, script = _directives(text, "prompt", script)
                answers.append(answer)
            opts = read_options(body)
        except BadRequest as exc:
            return _error(400, exc.message, param=exc.param, code=exc.code)
        answers = [self._state.shaped(_answer_text(a, script), script) for a in answers]
        joined = "\n".join(prompts)
        return await self._generate(request, "text", answers, joined, script,
                                    count_tokens(joined), None, opts)

    async def embeddings(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await self._body(request)
            texts = _embedding_inputs(body.get("input"))
            dims = body.get("dimensions") or 16
            if not isinstance(dims, int) or isinstance(dims, bool) or not 1 <= dims <= _MAX_DIMS:
                raise BadRequest(f"'dimensions' must be an integer in [1, {_MAX_DIMS}].",
                                 "dimensions")
            fmt = body.get("encoding_format") or "float"
            if fmt not in ("float", "base64"):
                raise BadRequest("'encoding_format' must be 'float' or 'base64'.",
                                 "encoding_format")
            script = None
            for text in texts:
                _, script = _directives(text, "input", script)
        except BadRequest as exc:
            return _error(400, exc.message, param=exc.param, code=exc.code)
        joined = "\n".join(texts)
        early = await self._prelude(request, script, joined)
        if early is not None:
            return early
        data = [{"object": "embedding", "index": i,
                 "embedding": embedding_vector(text, dims, fmt == "base64")}
                for i, text in enumerate(texts)]
        tokens = count_tokens(joined)
        payload = orjson.dumps({"object": "list", "data": data, "model": self._state.model,
                                "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})
        return await self._send(request, payload, script)

    async def models(self, request: web.Request) -> web.Response:
        self._state.record(request, None)
        return _json({"object": "list", "data": [self._state.model_card]})

    async def model(self, request: web.Request) -> web.Response:
        self._state.record(request, None)
        if request.match_info["model"] != self._state.model_card["id"]:
            return _error(404, "The model does not exist.", param="model",
                          code="model_not_found")
        return _json(self._state.model_card)

    async def healthz(self, request: web.Request) -> web.Response:
        return _json({"status": "ok"})

    async def get_requests(self, request: web.Request) -> web.Response:
        log = list(self._state.log)
        limit = request.query.get("limit")
        if limit is not None:
            if not limit.isdigit():
                return _error(400, "'limit' must be a non-negative integer.", param="limit")
            log = log[len(log) - int(limit):] if int(limit) else []
        return _json({"object": "list", "data": log, "total_seen": self._state.seen})

    async def delete_requests(self, request: web.Request) -> web.Response:
        cleared = len(self._state.log)
        self._state.log.clear()
        return _json({"cleared": cleared})

    async def get_behaviour(self, request: web.Request) -> web.Response:
        return _json(self._state.behaviour())

    async def put_behaviour(self, request: web.Request) -> web.Response:
        try:
            body = await self._body(request)
            self._state.set_behaviour(body)
        except BadRequest as exc:
            return _error(400, exc.message, param=exc.param, code=exc.code)
        return _json(self._state.behaviour())

    async def delete_counters(self, request: web.Request) -> web.Response:
        cleared = len(self._state.counters)
        self._state.counters.clear()
        return _json({"cleared": cleared})

    async def not_found(self, request: web.Request) -> web.Response:
        raw = await request.read()
        self._state.record(request, raw.decode("utf-8", "replace") if raw else None)
        return _error(404, f"Unknown path {request.path!r} on the railwatch demo upstream.",
                      code="unknown_url")


def _directives(text: str, param: str,
                script: Script | None = None) -> tuple[str, Script | None]:
    """``text`` without directives and the script; the fast path skips the regex."""
    if "[[demo:" not in text:
        return text, script
    try:
        return parse_directives(text, script)
    except DirectiveError as exc:
        raise BadRequest(str(exc), param, "invalid_demo_directive") from None


def _answer_text(echo: str, script: Script | None) -> str:
    """The reply before formatting: the echo, or what the content directives ask for."""
    if script is None:
        return f"Echo: {echo}"
    text = script.say if script.say is not None else f"Echo: {echo}"
    if script.toxic:
        text = TOXIC_SENTENCE
    if script.pii:
        text = f"{text} {PII_SENTENCE}"
    if script.toxic_midway:
        text = f"{text} {BENIGN_FILLER} {TOXIC_SENTENCE}"
    return text


def _embedding_inputs(value: Any) -> list[str]:
    """Embedding inputs as texts (token-id inputs become their decimal spelling)."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value:
        if all(isinstance(v, str) for v in value):
            return value
        if all(isinstance(v, int) for v in value):
            return [" ".join(map(str, value))]
        if all(isinstance(v, list) and all(isinstance(t, int) for t in v) for v in value):
            return [" ".join(map(str, v)) for v in value]
    raise BadRequest("'input' must be a string, an array of strings or token arrays.", "input")

"""The demo upstream: a scripted, OpenAI-compatible HTTP server (not a language model).

It lets people try railwatch with no model, and lets tests drive the sidecar's
guardrails with known behaviour. Every answer is deterministic (only ``id`` and
``created`` change between identical requests):

* ``POST /v1/chat/completions`` answers ``"Echo: <last user message>"``; with
  ``n > 1`` choice *k* (k >= 2) gets the suffix ``" (choice k)"``. With ``tools``
  (and ``tool_choice`` not ``"none"``, and the last message not a tool result) it calls
  the first or the forced function with arguments generated from its JSON schema
  (``finish_reason: "tool_calls"``). ``response_format`` ``json_object`` answers
  ``{"echo": "<answer>", "ok": true}``; ``json_schema`` a value made to validate
  against the schema (plain strings in it hold the answer text). ``max_tokens`` /
  ``max_completion_tokens`` cut the answer (``finish_reason: "length"``).
* ``POST /v1/completions`` does the same for each prompt (a string or a list of
  strings; choice index = prompt index * n + k).
* ``POST /v1/embeddings``: unit vectors hashed from each input, ``dimensions`` of them
  (default 16); ``encoding_format`` ``float`` or ``base64``.
* ``GET /v1/models`` lists :data:`DEMO_MODEL_ID`; ``GET /healthz``.
* ``GET /_demo/requests[?limit=N]``: the last requests received (oldest first), each
  ``{"seq", "time", "method", "path", "query", "headers", "body"}``, with **all**
  request headers, ``authorization`` included, verbatim: this is a demo and test
  server, never to be put in front of real credentials. ``DELETE /_demo/requests``
  clears that log; ``DELETE /_demo/counters`` resets the per-prompt counters.
* ``GET`` / ``PUT /_demo/behaviour``: state-wide behaviour for every later answer
  (served model, ``system_fingerprint``, ``pad_words``, ``suffix``), to script drift
  without touching the prompts (see ``BEHAVIOUR_KEYS``).

Any model name is accepted; every answer reports ``model`` :data:`DEMO_SERVED_MODEL`
and ``system_fingerprint`` :data:`DEMO_SYSTEM_FINGERPRINT` (both configurable, e.g. to
play a fallback model or a silent model change). Streams send ``default_chunk_chars``
characters per chunk with ``chunk_delay_ms`` between chunks.

Token counts come from a simple tokenizer: every run of word characters is one token
and every other non-space character is one token. ``prompt_tokens`` counts the text
of all messages (or prompts, or inputs); ``completion_tokens`` the answer text (for a
tool call, its arguments plus one for the name), summed over choices.

Scripted behaviour is selected with ``[[demo:NAME]]`` / ``[[demo:NAME=VALUE]]``
directives inside the last user message, the prompt(s) or the embedding input(s); they
are removed from the echo. :data:`DIRECTIVES` lists them with their syntax. An unknown
or malformed directive, like a malformed body, gets a 400 in OpenAI's error shape.
``fail_times`` / ``invalid_json_times`` count per exact text (the last user message,
directives included), for the last 4096 distinct texts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable
from typing import Any, Self

from aiohttp import web

from ._handlers import STATE_KEY, DemoState, Handlers
from ._script import DIRECTIVES, PII_SENTENCE, TOXIC_SENTENCE

__all__ = [
    "DEMO_MODEL_ID",
    "DEMO_OWNED_BY",
    "DEMO_SERVED_MODEL",
    "DEMO_SYSTEM_FINGERPRINT",
    "DIRECTIVES",
    "PII_SENTENCE",
    "TOXIC_SENTENCE",
    "DemoUpstream",
    "create_app",
    "run_demo_upstream",
    "start_demo_upstream",
]

#: The model id ``/v1/models`` lists.
DEMO_MODEL_ID = "railwatch-demo"
#: Its ``owned_by``: says plainly what answers.
DEMO_OWNED_BY = "railwatch (scripted demo, not a language model)"
#: The ``model`` every answer reports, whatever model was asked for.
DEMO_SERVED_MODEL = "railwatch-demo-scripted"
DEMO_SYSTEM_FINGERPRINT = "fp_railwatch_demo"

_log = logging.getLogger(__name__)
_MODEL_CREATED = 1735689600  # 2025-01-01, fixed so /v1/models is deterministic
_MAX_BODY = 64 * 1024 * 1024


def create_app(*, chunk_delay_ms: float = 0.0, default_chunk_chars: int = 8,
               served_model: str = DEMO_SERVED_MODEL,
               system_fingerprint: str = DEMO_SYSTEM_FINGERPRINT,
               request_log_size: int = 100) -> web.Application:
    """Build the demo upstream application (nothing is started; no I/O).

    ``chunk_delay_ms``: default pause between stream chunks (milliseconds);
    ``default_chunk_chars``: characters per streamed piece; ``request_log_size``: how
    many requests ``/_demo/requests`` keeps. Raises ``ValueError`` on negative values.
    """
    card = {"id": DEMO_MODEL_ID, "object": "model", "created": _MODEL_CREATED,
            "owned_by": DEMO_OWNED_BY}
    state = DemoState(chunk_delay_ms=chunk_delay_ms, default_chunk_chars=default_chunk_chars,
                      served_model=served_model, system_fingerprint=system_fingerprint,
                      request_log_size=request_log_size, model_card=card)
    app = web.Application(client_max_size=_MAX_BODY)
    app[STATE_KEY] = state
    h = Handlers(state)
    add = app.router.add_route
    add("POST", "/v1/chat/completions", h.chat)
    add("POST", "/v1/completions", h.completions)
    add("POST", "/v1/embeddings", h.embeddings)
    add("GET", "/v1/models", h.models)
    add("GET", "/v1/models/{model}", h.model)
    add("GET", "/healthz", h.healthz)
    add("GET", "/_demo/requests", h.get_requests)
    add("DELETE", "/_demo/requests", h.delete_requests)
    add("DELETE", "/_demo/counters", h.delete_counters)
    add("GET", "/_demo/behaviour", h.get_behaviour)
    add("PUT", "/_demo/behaviour", h.put_behaviour)
    add("*", "/{tail:.*}", h.not_found)
    return app


class DemoUpstream:
    """A running demo upstream (see :func:`start_demo_upstream`)."""

    def __init__(self, runner: web.AppRunner, host: str, port: int) -> None:
        self._runner = runner
        self.host = host
        self.port = port
        shown = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
        self.url = f"http://[{shown}]:{port}" if ":" in shown else f"http://{shown}:{port}"

    @property
    def base_url(self) -> str:
        """``url + "/v1"``: what an OpenAI client's ``base_url`` wants."""
        return self.url + "/v1"

    @property
    def app(self) -> web.Application:
        return self._runner.app

    def recorded_requests(self) -> list[dict[str, Any]]:
        """A copy of the request log, oldest first (what ``GET /_demo/requests`` shows)."""
        return list(self._runner.app[STATE_KEY].log)

    async def close(self) -> None:
        """Stop listening and end open connections (waits at most about a second)."""
        await self._runner.cleanup()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


async def start_demo_upstream(host: str = "127.0.0.1", port: int = 0,
                              **opts: Any) -> DemoUpstream:
    """Start the demo upstream on the running loop; ``port=0`` picks a free port.

    ``opts`` go to :func:`create_app`. Raises ``OSError`` when the address is taken.
    """
    runner = web.AppRunner(create_app(**opts), access_log=None, handle_signals=False,
                           shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=1024)
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    bound = runner.addresses[0][1]
    return DemoUpstream(runner, host, bound)


def run_demo_upstream(host: str = "127.0.0.1", port: int = 8000, *,
                      on_started: Callable[[DemoUpstream], object] | None = None,
                      **opts: Any) -> None:
    """Serve the demo upstream until SIGINT or SIGTERM (blocks; uvloop when installed).

    ``on_started`` is called once listening (e.g. to print ``upstream.url`` when
    ``port=0``); ``opts`` go to :func:`create_app`. Raises ``OSError`` when the
    address is taken.
    """

    async def serve() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
        upstream = await start_demo_upstream(host, port, **opts)
        _log.info("railwatch demo upstream (scripted, not a language model) on %s",
                  upstream.url)
        if on_started is not None:
            on_started(upstream)
        try:
            await stop.wait()
        finally:
            await upstream.close()

    try:
        import uvloop
    except ImportError:
        loop_factory = None
    else:
        loop_factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(serve())

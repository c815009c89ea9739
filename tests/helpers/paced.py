"""A scripted model server paced like a real one (the true edge of the stream tests).

:func:`completions` (a handler for the ``scripted_upstream`` fixture) answers
``POST /v1/chat/completions`` with ``stream: true`` as llama.cpp's server does: a role chunk, one content chunk per token 10-20 ms apart (seeded jitter),
tokens that often end mid-word (" wor", "ld"), a finish chunk, ``[DONE]``; it
ignores ``stream_options.include_usage`` (no usage chunk). The model name picks
the script:

- ``paced`` (any other name): :data:`ANSWER` cut into :func:`tokens`;
- ``json``: :data:`JSON_ANSWER`; ``broken-json``: the same without its last brace;
- ``toxic-first``: an insult in the first tokens;
- ``truncated``: the role chunk, then ``[DONE]`` (no content, no finish_reason);
- ``stall``: headers, then silence for :data:`STALL_S` seconds.

Tests time what their client sees, direct and through the sidecar, in the same run.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from typing import Any

from aiohttp import web

ANSWER = (
    "Rivers shape the land they cross. Over thousands of years, water carves valleys, "
    "moves sediment downstream, and builds deltas where it meets the sea; floods spread "
    "fertile silt across the plains. Engineers study these processes carefully, because "
    "dams, levees and bridges change how a river behaves. A healthy river also supports "
    "fish, birds and the people who live along its banks, so managing it well matters."
)
JSON_ANSWER = '{"city": "Lisbon", "population": 545000, "tags": ["coastal", "capital"]}'
TOXIC_FIRST = "Idiot. You stupid moron, I hate you. Anyway, here is the answer you asked for."
STALL_S = 5.0


def tokens(text: str, seed: int = 7) -> list[str]:
    """``text`` in model-like pieces: words with their leading space, long words cut in
    two or three (so chunks end mid-word), punctuation on its own."""
    rnd = random.Random(seed)
    out: list[str] = []
    word = ""
    for c in text:
        if c == " " and word:
            out.extend(_cut(word, rnd))
            word = ""
        if c in ".,;" and word:
            out.extend(_cut(word, rnd))
            out.append(c)
            word = ""
            continue
        word += c
    if word:
        out.extend(_cut(word, rnd))
    return out


def _cut(word: str, rnd: random.Random) -> list[str]:
    if len(word) < 7:
        return [word]
    k = rnd.randint(3, len(word) - 3)
    return [word[:k], word[k:]]


def _chunk(model: str, delta: dict[str, Any], finish: str | None = None) -> bytes:
    doc = {"id": "chatcmpl-paced", "object": "chat.completion.chunk", "created": 1,
           "model": model, "choices": [{"index": 0, "delta": delta, "logprobs": None,
                                        "finish_reason": finish}]}
    return b"data: " + json.dumps(doc).encode() + b"\n\n"


async def completions(request: web.Request) -> web.StreamResponse:
    body = await request.json()
    model = str(body.get("model", "paced"))
    if not body.get("stream"):
        text = JSON_ANSWER if model == "json" else ANSWER
        return web.json_response({
            "id": "chatcmpl-paced", "object": "chat.completion", "created": 1, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                         "finish_reason": "stop"}]})
    out = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await out.prepare(request)
    if model == "stall":
        await asyncio.sleep(STALL_S)
        return out
    await out.write(_chunk(model, {"role": "assistant", "content": ""}))
    if model == "truncated":
        await out.write(b"data: [DONE]\n\n")
        await out.write_eof()
        return out
    text = {"json": JSON_ANSWER, "broken-json": JSON_ANSWER[:-1],
            "toxic-first": TOXIC_FIRST}.get(model, ANSWER)
    rnd = random.Random(11)
    for piece in tokens(text):
        await asyncio.sleep(rnd.uniform(0.010, 0.020))
        try:
            await out.write(_chunk(model, {"content": piece}))
        except ConnectionResetError:
            return out
    await asyncio.sleep(0.012)
    await out.write(_chunk(model, {}, "stop"))
    await out.write(b"data: [DONE]\n\n")
    await out.write_eof()
    return out


def timed_stream(chunks: Any) -> tuple[list[str], list[float]]:
    """Iterate an ``openai`` stream: (each chunk's content, its arrival time in s)."""
    pieces: list[str] = []
    times: list[float] = []
    for c in chunks:
        if c.choices and c.choices[0].delta.content:
            pieces.append(c.choices[0].delta.content)
            times.append(time.perf_counter())
    return pieces, times


def largest_gap(times: list[float]) -> float:
    return max((b - a for a, b in zip(times, times[1:], strict=False)), default=0.0)

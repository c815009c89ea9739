"""HTTP routes: the OpenAI surface, health and readiness, and a catch-all pass-through."""

from __future__ import annotations

import orjson
from aiohttp import web

from sidecar import __version__, semconv
from sidecar.app import RUNTIME, Runtime, readiness


def _json(body: object, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")


def setup_routes(app: web.Application, runtime: Runtime) -> None:
    proxy = runtime.proxy

    async def healthz(_request: web.Request) -> web.Response:
        return _json({"status": "ok", "version": __version__})

    async def readyz(request: web.Request) -> web.Response:
        rt = request.app[RUNTIME]
        ready, body = readiness(rt, await rt.upstream.probe())
        return _json(body, 200 if ready else 503)

    router = app.router
    router.add_get("/healthz", healthz)
    router.add_get("/readyz", readyz)
    router.add_post("/v1/chat/completions", proxy.openai_handler(semconv.OP_CHAT))
    router.add_post("/v1/completions", proxy.openai_handler(semconv.OP_TEXT_COMPLETION))
    router.add_post("/v1/embeddings", proxy.openai_handler(semconv.OP_EMBEDDINGS))
    router.add_get("/v1/models", proxy.passthrough_handler(semconv.OP_MODELS))
    router.add_route("*", "/{tail:.*}", proxy.passthrough_handler())
